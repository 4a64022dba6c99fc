"""Deep-link login across real processes: an API worker, a bot worker, the Telegram sandbox.

The client creates a request and holds `GET ?wait=30`; the user opens the link in
the bot and taps Approve; the tap, not the poll's own deadline, answers the held GET.
(How soon after the tap is a latency figure, for a benchmark rather than a test.)
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

KEY = {"X-API-Key": "shop-key-0123456789abcdefgh"}
PATH = "/v1/login-requests"
# A held poll reads the request once more when its own deadline runs out, so at that deadline
# it would find the approval anyway: only an answer well before it shows the tap woke it.
HOLD = 30  # the longest `wait` there is
WOKEN_WITHIN = 20.0


@pytest.fixture
def system(start_api: ApiStarter, start_bot: BotStarter) -> tuple[ApiProcess, BotProcess]:
    bot = start_bot()
    api = start_api(
        AUTH_SECRET=AUTH_SECRET, API_KEYS="shop.example:shop-key-0123456789abcdefgh",
        LOG_LEVEL="DEBUG",
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


def timed_get(url: str, **params: Any) -> tuple[httpx.Response, float]:
    """GET `url` as the client does: its answer and how long the request took."""
    started = time.monotonic()
    response = httpx.get(url, params=params, headers=KEY, timeout=HOLD + 10)
    return response, time.monotonic() - started


def test_a_held_poll_is_answered_by_the_tap_not_its_deadline(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, bot = system
    created = create(api)
    assert created["deep_link"] == f"https://t.me/{bot.username()}?start=" + (
        created["start_command"].removeprefix("/start ")
    )
    url = f"{api.url}{PATH}/{created['id']}"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(timed_get, url, wait=HOLD)
        wait_until(lambda: "login poll held" in api.output(), what="the poll to be held")
        prompt = bot.ask(created["start_command"], ANN)
        assert prompt["text"].startswith("Log in to shop.example?")
        assert not held.done(), "the poll must still be waiting before the tap"
        approve = buttons(prompt)[0]["callback_data"]
        bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], approve, ANN, bot.token)
        response, took = held.result(timeout=HOLD + 15)  # past the deadline: it answers
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "approved" and body["user"]["id"] == ANN["id"]
    assert took < WOKEN_WITHIN, (
        f"answered {took:.1f} s after it began: by its own {HOLD} s deadline, not the tap"
    )
    me = httpx.get(
        f"{api.url}/v1/me",
        headers={**KEY, "Authorization": f"Bearer {body['access_token']}"},
    )
    assert me.json()["user"]["username"] == "ann"
    assert httpx.get(url, headers=KEY).status_code == 404  # delivered once, then gone
    assert f"{PATH}/{{id}}?wait={HOLD}" in api.output()  # the access log ...
    assert created["id"] not in api.output()  # ... never shows the id


def test_a_held_poll_with_no_tap_answers_pending_after_wait(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, _ = system
    created = create(api)
    response, took = timed_get(f"{api.url}{PATH}/{created['id']}", wait=2)
    assert response.json()["status"] == "pending"
    assert took >= 2.0  # held for its `wait` ...
    assert took < 15, f"held {took:.1f} s for wait=2"  # ... not for the longest wait (30 s)


def test_stopping_the_api_lets_held_polls_answer_at_once(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    """A stop answers held polls first. Otherwise uvicorn would sit out its graceful-shutdown
    timeout on them, then cancel them: the client would get no answer, and the log would say
    "timeout graceful shutdown exceeded"."""
    api, _ = system
    created = create(api)
    url = f"{api.url}{PATH}/{created['id']}"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(timed_get, url, wait=HOLD)
        wait_until(lambda: "login poll held" in api.output(), what="the poll to be held")
        assert not held.done()
        api.stop()
        response, _ = held.result(timeout=15)
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert "graceful shutdown exceeded" not in api.output()
    assert "API worker stopped" in api.output() and "Traceback" not in api.output()
