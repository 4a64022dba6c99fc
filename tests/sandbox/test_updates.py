"""getUpdates long polling, offsets and the two 409 conflicts (webhooks: test_webhook.py)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.fixtures.common import wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token


def _poll(sandbox: TelegramSandbox, token: str, **params: Any) -> httpx.Response:
    with httpx.Client(timeout=40, trust_env=False) as client:
        return client.post(f"{sandbox.api_base}{token}/getUpdates", json=params)


def _pending(sandbox: TelegramSandbox) -> bool:
    return any(bot["get_updates_pending"] for bot in sandbox.bots())


def test_offset_confirms_earlier_updates(sandbox: TelegramSandbox) -> None:
    token = make_token()
    ids = [sandbox.send(f"m{i}", token=token)["update_id"] for i in range(3)]
    first = sandbox.api(token, "getUpdates").json()["result"]
    assert [u["update_id"] for u in first] == ids
    assert [u["update_id"] for u in sandbox.api(token, "getUpdates").json()["result"]] == ids
    rest = sandbox.api(token, "getUpdates", offset=ids[1]).json()["result"]
    assert [u["update_id"] for u in rest] == ids[1:]
    assert sandbox.api(token, "getUpdates", offset=ids[2] + 1).json()["result"] == []
    limited = sandbox.send("m3", token=token)["update_id"]
    sandbox.send("m4", token=token)
    assert [u["update_id"] for u in sandbox.api(token, "getUpdates", limit=1).json()["result"]] == [
        limited
    ]


def test_long_poll_answers_as_soon_as_an_update_arrives(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(_poll, sandbox, token, timeout=30)
        wait_until(lambda: _pending(sandbox), what="the long poll to be pending")
        sandbox.send("wake up", token=token)
        response = future.result(timeout=40)
    # answered by the update, well before the poll's own 30 s deadline
    assert time.monotonic() - started < 20
    assert [u["message"]["text"] for u in response.json()["result"]] == ["wake up"]


def test_a_second_get_updates_ends_the_first_with_409(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_poll, sandbox, token, timeout=20)
        wait_until(lambda: _pending(sandbox), what="the first long poll to be pending")
        second = sandbox.api(token, "getUpdates", timeout=0)
        older = first.result(timeout=10)
    assert second.status_code == 200
    assert older.status_code == 409
    assert older.json()["description"] == (
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running"
    )
    (bot,) = sandbox.bots()
    assert bot["get_updates_calls"] == 2
    assert bot["get_updates_pending"] is False


def test_a_pending_long_poll_ends_with_409_when_a_webhook_is_set(
    sandbox: TelegramSandbox,
) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(_poll, sandbox, token, timeout=20)
        wait_until(lambda: _pending(sandbox), what="the long poll to be pending")
        sandbox.api(token, "setWebhook", url="http://127.0.0.1:9/hook")
        assert poll.result(timeout=10).status_code == 409
