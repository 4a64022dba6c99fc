"""'Confirm your order' and the shop's webhook receiver from a real browser, against the
system `make run` starts with an API client (then it points a webhook for that client at
the demo's receiver, its secret made once in var/demo/): log in with a typed code,
confirm the order in the bot, and see the signed events arrive on the page.

Headless Chromium from the system driven by Playwright (tests/fixtures/browser.py,
which skips this module without one).
"""

from __future__ import annotations

import re

import pytest

from sandbox.launch import SANDBOX_TOKEN
from tests.fixtures.bot import ANN, Message
from tests.fixtures.browser import NO_CHROMIUM, chromium
from tests.fixtures.common import wait_until
from tests.fixtures.system import System, SystemStarter

if chromium() is None:  # skipped before Playwright is imported
    pytest.skip(NO_CHROMIUM, allow_module_level=True)

from playwright.sync_api import BrowserContext, Page, ViewportSize, expect

WHO = "Logged in as Ann (@ann)"
API_KEYS = "Acme Shop:acme-shop-key-0123456789abcdef"


@pytest.fixture
def browser_viewport() -> ViewportSize:
    return {"width": 1200, "height": 1000}


@pytest.fixture
def system(start_system: SystemStarter) -> System:
    """`make run` with one API client and nothing else configured; once a bot has
    published its username."""
    system = start_system(API_KEYS=API_KEYS)
    wait_until(lambda: "published bot username" in system.output(), timeout=30,
               what="a bot to publish its username")
    return system


def _last_message(system: System) -> int:
    messages = system.sandbox.messages(ANN["id"], token=SANDBOX_TOKEN)
    return max((m["message_id"] for m in messages), default=0)


def _approval_prompt(system: System, after: int) -> Message:
    return system.sandbox.wait_for_bot_message(ANN["id"], after=after, timeout=40,
                                               token=SANDBOX_TOKEN)


def _event(page: Page, type_: str) -> None:
    """The event of `type_` is listed, with its 'signature verified' mark."""
    item = page.locator(f'[data-testid="event"][data-type="{type_}"]')
    expect(item).to_have_count(1)
    expect(item.get_by_test_id("verified")).to_have_text("✓ signature verified")


def test_confirm_an_order_in_telegram_and_see_the_signed_events(
    browser: BrowserContext, system: System
) -> None:
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.goto(f"{system.api_url}/demo")
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    page.get_by_test_id("code-input").fill(system.new_code(ANN))
    page.get_by_test_id("code-submit").click()
    expect(page.get_by_test_id("who")).to_have_text(WHO)
    # the redeem's event reaches the shop's receiver, signed, and the page shows it
    _event(page, "code.redeemed")

    after = _last_message(system)
    page.get_by_test_id("confirm-order").click()
    expect(page.get_by_test_id("order-waiting")).to_contain_text(re.compile(r"Order #\d{4}"))
    order = page.locator("#order-text").inner_text().removeprefix("Order #")
    prompt = _approval_prompt(system, after)
    assert f"Confirm order #{order}: 2 × Telegram stickers, 9.99 €" in prompt["text"]  # noqa: RUF001
    system.tap(prompt, "Approve", ANN)
    expect(page.get_by_test_id("order-status")).to_contain_text("Approved")
    expect(page.get_by_test_id("order-waiting")).to_be_hidden()
    _event(page, "approval.approved")
    _event(page, "code.redeemed")  # still there, below the newer one
    first = page.get_by_test_id("event").first
    expect(first).to_have_attribute("data-type", "approval.approved")

    secret = (system.project / "var" / "demo" / "webhook-secret").read_text().strip()
    assert secret.startswith("whsec_") and secret not in system.output()
