"""Deep-link login across real processes: an API worker, a bot worker, the Telegram sandbox.

The client creates a request and holds `GET ?wait=25`; the user opens the link in
the bot and taps Approve; the held GET answers within a second of the tap.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, buttons
from tests.fixtures.common import wait_until

KEY = {"X-API-Key": "shop-key"}
PATH = "/v1/login-requests"


@pytest.fixture
def system(start_api: ApiStarter, start_bot: BotStarter) -> tuple[ApiProcess, BotProcess]:
    bot = start_bot()
    api = start_api(
        AUTH_SECRET=AUTH_SECRET, API_KEYS="shop.example:shop-key", LOG_LEVEL="DEBUG"
    )
    return api, bot


def create(api: ApiProcess) -> dict[str, Any]:
    """A new request, once the bot has published its username (it does so at start)."""
    response = wait_until(
        lambda: (r := httpx.post(f"{api.url}{PATH}", json={}, headers=KEY)).status_code == 201
        and r,
        timeout=20,
        what="the API to create a login request",
    )
    body: dict[str, Any] = response.json()
    return body


def test_a_held_poll_answers_within_a_second_of_the_tap(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, bot = system
    created = create(api)
    assert created["deep_link"] == f"https://t.me/{bot.username()}?start=" + (
        created["start_command"].removeprefix("/start ")
    )
    url = f"{api.url}{PATH}/{created['id']}"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, url, params={"wait": 25}, headers=KEY, timeout=40)
        wait_until(lambda: "login poll held" in api.output(), what="the poll to be held")
        prompt = bot.ask(created["start_command"], ANN)
        assert prompt["text"].startswith("Log in to shop.example?")
        assert not held.done(), "the poll must still be waiting before the tap"
        approve = buttons(prompt)[0]["callback_data"]
        tapped_at = time.monotonic()
        bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], approve, ANN, bot.token)
        response = held.result(timeout=25)
        answered_at = time.monotonic()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved" and body["user"]["id"] == ANN["id"]
    assert answered_at - tapped_at < 1.0, f"answered {answered_at - tapped_at:.3f} s after the tap"
    me = httpx.get(
        f"{api.url}/v1/me",
        headers={**KEY, "Authorization": f"Bearer {body['access_token']}"},
    )
    assert me.json()["user"]["username"] == "ann"
    assert httpx.get(url, headers=KEY).status_code == 404  # delivered once, then gone
    assert f"{PATH}/{{id}}?wait=25" in api.output()  # the access log ...
    assert created["id"] not in api.output()  # ... never shows the id


def test_a_held_poll_with_no_tap_answers_pending_after_wait(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, _ = system
    created = create(api)
    started = time.monotonic()
    response = httpx.get(
        f"{api.url}{PATH}/{created['id']}", params={"wait": 2}, headers=KEY, timeout=10
    )
    took = time.monotonic() - started
    assert response.json()["status"] == "pending"
    assert 2.0 <= took < 4.0, took


def test_stopping_the_api_lets_held_polls_answer_at_once(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, _ = system
    created = create(api)
    url = f"{api.url}{PATH}/{created['id']}"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, url, params={"wait": 25}, headers=KEY, timeout=40)
        wait_until(lambda: "login poll held" in api.output(), what="the poll to be held")
        stopping = time.monotonic()
        api.stop()
        stopped = time.monotonic() - stopping
        response = held.result(timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert stopped < 3.0, f"took {stopped:.1f} s to stop with a held poll"
    assert "API worker stopped" in api.output() and "Traceback" not in api.output()
