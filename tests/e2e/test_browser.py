"""A person in a real browser: the demo website and the Telegram sandbox's chat page.

Headless Chromium from the system driven by Playwright (tests/fixtures/browser.py,
which skips this module without one), against real processes: Redis, the sandbox,
a bot worker and an API worker with DEMO_PAGE=1. With TGLOGIN_SCREENSHOTS=1 the
logged-in demo page is saved to docs/demo.png for the README.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.fixtures.browser import NO_CHROMIUM, chromium
from tests.fixtures.common import ROOT
from tests.fixtures.demo import COOKIE, DemoSystem, demo_session

if chromium() is None:  # skipped before Playwright is imported
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

from playwright.sync_api import BrowserContext, Locator, Page, expect

SCREENSHOT = ROOT / "docs" / "demo.png"


def _open_demo(browser: BrowserContext, system: DemoSystem) -> Page:
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.goto(f"{system.api.url}/demo")
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    return page


def _bot_messages(chat: Page) -> Locator:
    return chat.locator('[data-testid="message"][data-from-bot="true"]')


def _token(browser: BrowserContext) -> str:
    (cookie,) = [c for c in browser.cookies() if c["name"] == COOKIE]
    token = demo_session(cookie["value"]).get("token")
    assert isinstance(token, str), "the demo's session holds no access token"
    return token


def test_log_in_with_telegram_by_approving_in_the_chat(
    browser: BrowserContext, demo_system: DemoSystem
) -> None:
    demo = _open_demo(browser, demo_system)
    demo.get_by_test_id("login-telegram").click()
    expect(demo.get_by_test_id("telegram-pending")).to_be_visible()
    command = demo.get_by_test_id("start-command")
    expect(command).to_have_text(re.compile(r"^/start [A-Za-z0-9_-]{16,}$"))
    payload = command.inner_text().removeprefix("/start ")
    expect(demo.get_by_test_id("deep-link")).to_have_attribute(
        "href", f"https://t.me/{demo_system.bot.username()}?start={payload}"
    )

    # "Open in the Telegram sandbox" opens the bot's chat as t.me would: /start <payload>
    with browser.expect_page() as opened:
        demo.get_by_test_id("sandbox-link").click()
    chat = opened.value
    prompt = _bot_messages(chat).filter(has_text="Acme Shop")
    expect(prompt).to_have_count(1)
    sent = chat.locator('[data-testid="message"][data-from-bot="false"]')
    expect(sent.filter(has_text=f"/start {payload}")).to_have_count(1)
    prompt.get_by_role("button", name="Approve").click()
    expect(prompt.get_by_test_id("inline-keyboard")).to_have_count(0)  # edited: decided

    expect(demo.get_by_test_id("logged-in")).to_be_visible()
    expect(demo.get_by_test_id("who")).to_have_text("Logged in as Ann (@ann)")
    assert demo_system.me(_token(browser)) == 200
    if os.environ.get("TGLOGIN_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        demo.bring_to_front()
        demo.screenshot(path=str(SCREENSHOT))


def test_log_in_with_a_typed_code_then_log_out(
    browser: BrowserContext, demo_system: DemoSystem
) -> None:
    chat = browser.new_page()
    chat.goto(demo_system.sandbox.url)
    expect(chat.get_by_test_id("bot-name")).to_have_text(f"@{demo_system.bot.username()}")
    chat.get_by_test_id("message-input").fill("/code")
    chat.get_by_test_id("send-button").click()
    reply = _bot_messages(chat).last
    code_element = reply.locator('[data-entity="code"]')
    expect(code_element).to_have_text(re.compile(r"^\d{8}$"))
    code = code_element.inner_text()
    copy = reply.locator('[data-testid="inline-button"][data-kind="copy_text"]')
    expect(copy).to_have_attribute("data-copy-text", code)
    copy.click()
    expect(copy).to_have_attribute("data-copied", "true")

    demo = browser.new_page()
    demo.goto(f"{demo_system.api.url}/demo")
    demo.get_by_test_id("code-input").fill("0000 0000")
    demo.get_by_test_id("code-submit").click()
    expect(demo.get_by_test_id("error")).to_contain_text("didn't work")
    demo.get_by_test_id("code-input").fill(f"{code[:4]} {code[4:]}")
    demo.get_by_test_id("code-submit").click()
    expect(demo.get_by_test_id("who")).to_have_text("Logged in as Ann (@ann)")
    expect(demo.get_by_test_id("error")).to_be_hidden()
    token = _token(browser)
    assert demo_system.me(token) == 200

    demo.reload()  # the session is the website's own: it survives a reload
    expect(demo.get_by_test_id("who")).to_have_text("Logged in as Ann (@ann)")

    demo.get_by_test_id("logout").click()
    expect(demo.get_by_test_id("logged-out")).to_be_visible()
    expect(demo.get_by_test_id("notice")).to_have_text("You have logged out.")
    assert demo_system.me(token) == 401  # revoked at the API, not just forgotten
