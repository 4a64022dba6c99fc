"""Log in with OpenID Connect from a real browser, against the system `make run` starts:
the demo website as a relying party of the API's own provider (make run configures its
client, issuer and signing key), the provider's authorization page, and a sandbox user
who picks the page's number in the bot, denies, or types a code from /code.

Headless Chromium from the system driven by Playwright (tests/fixtures/browser.py,
which skips this module without one).
"""

from __future__ import annotations

import re

import pytest

from tests.fixtures.bot import ANN, buttons
from tests.fixtures.browser import NO_CHROMIUM, chromium
from tests.fixtures.common import wait_until
from tests.fixtures.system import System, SystemStarter

if chromium() is None:  # skipped before Playwright is imported
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

from playwright.sync_api import BrowserContext, Page, ViewportSize, expect

WHO = "Logged in as Ann (@ann)"


@pytest.fixture
def browser_viewport() -> ViewportSize:
    """1200 by 800, taller than tests/fixtures/browser.py's default: the size these tests
    were written for."""
    return {"width": 1200, "height": 800}


@pytest.fixture
def system(start_system: SystemStarter) -> System:
    """`make run` with nothing configured: the demo on, with the client make run gives it;
    once a bot has published its username (until then the authorization page answers 503
    "the login bot has not started yet", as it should)."""
    system = start_system()
    wait_until(lambda: "published bot username" in system.output(), timeout=30,
               what="a bot to publish its username")
    return system


def _authorization_page(page: Page, system: System) -> str:
    """From the demo, "Log in with OpenID Connect" to the provider's page; its number."""
    page.goto(f"{system.api_url}/demo")
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    page.get_by_test_id("login-oidc").click()
    page.wait_for_url(re.compile(re.escape(system.api_url) + r"/oauth/authorize\?.*"))
    number = page.locator("#match")
    expect(number).to_have_text(re.compile(r"^[0-9]{2}$"))
    return number.inner_text()


def _start_command(page: Page, system: System) -> str:
    command = page.locator("#start-command")
    expect(command).to_have_text(re.compile(r"^/start [A-Za-z0-9_-]{16,}$"))
    text = command.inner_text()
    expect(page.locator("#deep-link")).to_have_attribute(
        "href", re.compile(r"^https://t\.me/[A-Za-z0-9_]+\?start=" + text.removeprefix("/start "))
    )
    return text


def _back_on_the_demo(page: Page, system: System) -> None:
    page.wait_for_url(f"{system.api_url}/demo")


def test_log_in_by_picking_the_pages_number_in_the_bot(
    browser: BrowserContext, system: System
) -> None:
    page = browser.pages[0] if browser.pages else browser.new_page()

    # first the user denies: back on the demo, told so, logged out
    _authorization_page(page, system)
    prompt = system.ask(_start_command(page, system), ANN)
    system.tap(prompt, "Deny", ANN)
    _back_on_the_demo(page, system)
    expect(page.get_by_test_id("notice")).to_have_text(
        "The login was denied in Telegram. Nothing happened.")
    expect(page.get_by_test_id("logged-out")).to_be_visible()

    # then approves by picking the page's number among the bot's three
    number = _authorization_page(page, system)
    prompt = system.ask(_start_command(page, system), ANN)
    assert "Acme Shop (demo)" in prompt["text"] and "127.0.0.1" in prompt["text"]
    labels = [button["text"] for button in buttons(prompt)]
    assert number in labels and "Deny" in labels and len(labels) == 4
    system.tap(prompt, number, ANN)
    _back_on_the_demo(page, system)
    expect(page.get_by_test_id("who")).to_have_text(WHO)
    expect(page.get_by_test_id("via")).to_have_text("Logged in with OpenID Connect")

    page.reload()  # the shop's own session
    expect(page.get_by_test_id("who")).to_have_text(WHO)
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("notice")).to_have_text("You have logged out.")
    expect(page.get_by_test_id("login-oidc")).to_be_visible()

    secret = (system.project / "var" / "oidc" / "demo-client-secret").read_text().strip()
    assert secret and secret not in system.output()


def test_log_in_with_a_typed_code(browser: BrowserContext, system: System) -> None:
    page = browser.pages[0] if browser.pages else browser.new_page()
    _authorization_page(page, system)
    code = system.new_code(ANN)
    page.locator("#code").fill(code)
    page.locator("#code-form button[type=submit]").click()
    _back_on_the_demo(page, system)
    expect(page.get_by_test_id("who")).to_have_text(WHO)
    expect(page.get_by_test_id("via")).to_be_visible()
