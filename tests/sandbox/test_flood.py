"""Flood limits and flood waits: the global and per-chat windows, 429 with retry_after, waits
after an injected 429, limits at start and at run time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.fixtures.common import free_port, run_module, wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token

DEFAULTS = {"send_rate": 30, "chat_burst": 3, "chat_window": 3.0}


def _bot(sandbox: TelegramSandbox, *chat_ids: int) -> str:
    token = make_token()
    for chat_id in chat_ids or (1001,):
        sandbox.send("hi", user={"id": chat_id, "first_name": f"U{chat_id}"}, token=token)
    return token


def _send(sandbox: TelegramSandbox, token: str, chat_id: int = 1001, **params: Any) -> Any:
    return sandbox.api(token, "sendMessage", chat_id=chat_id, text="x", **params)


def _is_429(response: Any) -> bool:
    body = response.json()
    retry = body["parameters"]["retry_after"]
    assert isinstance(retry, int) and retry >= 1
    assert body == {
        "ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
        "parameters": {"retry_after": retry},
    }
    return bool(response.status_code == 429)


def test_the_sandbox_starts_with_telegrams_limits(sandbox: TelegramSandbox) -> None:
    assert sandbox.limits() == DEFAULTS


def test_a_chat_gets_3_messages_in_3_seconds_and_its_wait_is_its_own(
    sandbox: TelegramSandbox,
) -> None:
    token = _bot(sandbox, 1001, 2002)
    assert [_send(sandbox, token).status_code for _ in range(3)] == [200, 200, 200]
    refused = _send(sandbox, token)
    assert _is_429(refused)
    retry_after = refused.json()["parameters"]["retry_after"]
    assert retry_after <= 3
    assert _send(sandbox, token, chat_id=2002).status_code == 200  # another chat goes on
    message_id = sandbox.messages(1001, token=token)[-1]["message_id"]
    edit = sandbox.api(token, "editMessageText", chat_id=1001, message_id=message_id, text="y")
    assert _is_429(edit)  # edits count as messages too

    sent = wait_until(lambda: _send(sandbox, token).status_code == 200, timeout=10,
                      what="chat 1001's window to free")
    assert sent
    calls = sandbox.calls(token, method="sendMessage")
    chat = [c for c in calls if c["chat_id"] == 1001]
    first_refusal = next(c for c in chat if c["status"] == 429)
    success = chat[-1]
    assert success["status"] == 200
    # the flood wait held for the whole retry_after (a lower bound the sandbox enforces)
    assert success["t"] - first_refusal["t"] >= retry_after - 0.1
    # in any 3 s window at most 3 messages were performed in the chat
    performed = [c["t"] for c in chat if c["status"] == 200]
    assert all(b - a >= 2.9 for a, b in zip(performed, performed[3:], strict=False))
    summary = sandbox.bot_summary(token)
    assert summary["flood_waits"] == len([c for c in calls if c["status"] == 429]) + 1


def test_the_global_window_and_refused_calls_not_counting(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    sandbox.set_limits(send_rate=5, chat_burst=0)
    statuses = [_send(sandbox, token).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    # a client hammering through its 429s still gets through at the rate: refusals don't count
    deadline = time.monotonic() + 15
    while len([c for c in sandbox.calls(token, "sendMessage") if c["status"] == 200]) < 12:
        assert time.monotonic() < deadline, "sends stopped getting through"
        _send(sandbox, token)
    calls = sandbox.calls(token, "sendMessage")
    performed = [c["t"] for c in calls if c["status"] == 200]
    assert all(b - a >= 0.95 for a, b in zip(performed, performed[5:], strict=False))
    assert all(c["retry_after"] == 1 for c in calls if c["status"] == 429)


def test_an_injected_429_starts_a_flood_wait_for_that_method(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    sandbox.set_limits(send_rate=0, chat_burst=0)
    sandbox.fault("sendMessage", retry_after=2, count=2, token=token)
    assert _send(sandbox, token).json()["parameters"]["retry_after"] == 2
    during = _send(sandbox, token)
    assert _is_429(during)
    assert during.json()["parameters"]["retry_after"] in (1, 2)
    assert sandbox.api(token, "getMe").status_code == 200
    assert sandbox.api(token, "sendChatAction", chat_id=1001, action="typing").status_code == 200

    # the wait does not use up the fault: its second 429 comes after the wait, then a success
    wait_until(lambda: _send(sandbox, token).status_code == 200, timeout=15,
               what="the flood waits to end")
    calls = sandbox.calls(token, "sendMessage")
    assert [c["status"] for c in calls] == [429] * (len(calls) - 1) + [200]
    assert all(c["retry_after"] in (1, 2) for c in calls[:-1])
    # two waits of 2 s back to back (lower bounds the sandbox enforces)
    assert calls[-1]["t"] - calls[0]["t"] >= 3.9
    assert sandbox.bot_summary(token)["flood_waits"] == len(calls) - 1


def test_limits_change_at_run_time_and_reset_restores_them(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    assert [_send(sandbox, token).status_code for _ in range(4)][-1] == 429
    assert sandbox.set_limits(chat_burst=0) == {**DEFAULTS, "chat_burst": 0}
    # lifting the limit ends the waits it caused
    assert [_send(sandbox, token).status_code for _ in range(10)] == [200] * 10
    assert sandbox.get("/control/limits").json() == {**DEFAULTS, "chat_burst": 0}
    for bad in ({"send_rate": -1}, {"chat_window": "soon"}, {"burst": 3}, {"chat_burst": 1.5}):
        assert sandbox.post("/control/limits", bad).status_code == 400, bad
    sandbox.reset()
    assert sandbox.limits() == DEFAULTS


def test_limits_from_flags_and_environment(tmp_path: Path) -> None:
    custom = TelegramSandbox(
        port=free_port(), log=tmp_path / "sandbox.log",
        args=["--chat-burst", "5", "--chat-window", "1.5"], env={"SANDBOX_SEND_RATE": "0"},
    )
    custom.start()
    try:
        expected = {"send_rate": 0, "chat_burst": 5, "chat_window": 1.5}
        assert custom.limits() == expected
        custom.set_limits(chat_burst=1)
        custom.reset()
        assert custom.limits() == expected
    finally:
        custom.stop()
        custom.http.close()
    bad_env = run_module("sandbox.telegram", {"SANDBOX_CHAT_BURST": "many"}, tmp_path)
    assert bad_env.returncode == 2
    assert "SANDBOX_CHAT_BURST" in bad_env.stderr
    bad_flag = run_module("sandbox.telegram", {}, tmp_path, "--send-rate", "-1")
    assert bad_flag.returncode == 2
    assert "--send-rate" in bad_flag.stderr
