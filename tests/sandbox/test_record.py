"""The record of calls (GET /control/calls) and the counts in GET /control/bots."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.fixtures.common import wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token


def test_every_call_is_recorded_in_order(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", chat={"id": -100500, "type": "group", "title": "G"}, token=token)
    sandbox.api(token, "GETME")
    sandbox.api(token, "sendMessage", chat_id=-100500, text="hello")
    sandbox.api(token, "sendMessage", chat_id=999, text="nobody")
    sandbox.api(token, "sendTelepathy", chat_id="@nobody")
    sandbox.api(token, "answerCallbackQuery", callback_query_id="1")
    sandbox.fault("getUpdates", retry_after=5, token=token)
    sandbox.api(token, "getUpdates")

    calls = sandbox.calls(token)
    assert [(c["method"], c["status"], c["chat_id"]) for c in calls] == [
        ("getMe", 200, None),
        ("sendMessage", 200, -100500),
        ("sendMessage", 400, 999),
        ("sendTelepathy", 404, None),
        ("answerCallbackQuery", 400, None),
        ("getUpdates", 429, None),
    ]
    assert calls[-1]["retry_after"] == 5
    assert "retry_after" not in calls[0]
    times = [c["t"] for c in calls]
    assert times == sorted(times)
    assert [c["chat_id"] for c in sandbox.calls(token, method="SENDMESSAGE")] == [-100500, 999]
    assert [c["method"] for c in sandbox.calls(token, since=times[3])] == [
        "answerCallbackQuery", "getUpdates"
    ]
    other = make_token()
    sandbox.api(other, "getMe")
    assert len(sandbox.calls(other)) == 1  # each bot has its own record
    bot_id = token.split(":", 1)[0]
    assert sandbox.get("/control/calls", bot_id=bot_id).json()["calls"] == calls
    assert sandbox.get("/control/calls", token=token, since="soon").status_code == 400


def test_conflicts_and_flood_waits_are_counted(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=30, trust_env=False) as client:
        first = pool.submit(
            client.post, f"{sandbox.api_base}{token}/getUpdates", json={"timeout": 20}
        )
        wait_until(lambda: sandbox.bot_summary(token)["get_updates_pending"],
                   what="the long poll to be pending")
        assert sandbox.api(token, "getUpdates").status_code == 200
        assert first.result(timeout=10).status_code == 409  # terminated by the second one
    sandbox.api(token, "setWebhook", url="http://127.0.0.1:9/hook")
    assert sandbox.api(token, "getUpdates").status_code == 409  # webhook is active
    sandbox.fault("getMe", retry_after=1, token=token)
    assert sandbox.api(token, "getMe").status_code == 429
    summary = sandbox.bot_summary(token)
    assert (summary["conflicts"], summary["flood_waits"]) == (2, 1)
    statuses = [c["status"] for c in sandbox.calls(token, "getUpdates")]
    assert sorted(statuses) == [200, 409, 409]
