"""Control faults that make a bot's calls misbehave: holds and their release, blocked users."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from tests.fixtures.common import PYTHON, wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token

_CLIENT = """
import sys, httpx
httpx.post(sys.argv[1], json={"chat_id": 1001, "text": "never"}, timeout=60)
"""


def _bot(sandbox: TelegramSandbox) -> str:
    token = make_token()
    sandbox.send("hi", token=token)
    return token


def _held(sandbox: TelegramSandbox, token: str, method: str = "sendMessage") -> int:
    held: int = sandbox.bot_summary(token)["held_calls"].get(method.lower(), 0)
    return held


def _bot_messages(sandbox: TelegramSandbox, token: str) -> list[str]:
    return [m["text"] for m in sandbox.messages(1001, token=token) if m["from_bot"]]


def test_a_held_call_is_performed_when_released(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    assert sandbox.fault("sendMessage", hold=60, count=1, token=token)["hold"] == 60
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(sandbox.api, token, "sendMessage", chat_id=1001, text="late")
        wait_until(lambda: _held(sandbox, token) == 1, what="the call to be held")
        assert _bot_messages(sandbox, token) == []
        assert sandbox.api(token, "getMe").status_code == 200  # other methods are not held
        assert sandbox.release("sendMessage", token=token) == 1
        response = held.result(timeout=10)
    assert response.status_code == 200
    assert response.json()["result"]["text"] == "late"
    assert _bot_messages(sandbox, token) == ["late"]
    # count was 1: the next call goes straight through
    assert sandbox.api(token, "sendMessage", chat_id=1001, text="now").status_code == 200
    assert _held(sandbox, token) == 0


def test_a_hold_ends_by_itself(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    sandbox.fault("sendMessage", hold=1, token=token)
    started = time.monotonic()
    response = sandbox.api(token, "sendMessage", chat_id=1001, text="after a second")
    assert time.monotonic() - started >= 0.9  # a lower bound: the hold lasted
    assert response.status_code == 200
    assert _bot_messages(sandbox, token) == ["after a second"]


def test_a_held_call_whose_client_is_killed_is_not_performed(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    sandbox.fault("sendMessage", hold=60, count=2, token=token)
    client = subprocess.Popen(
        [PYTHON, "-c", _CLIENT, f"{sandbox.api_base}{token}/sendMessage"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _held(sandbox, token) == 1, what="the call to be held")
    finally:
        client.kill()
        client.wait()
    wait_until(lambda: _held(sandbox, token) == 0, what="the hold to notice the client left")
    (call,) = sandbox.calls(token, "sendMessage")
    assert (call["status"], call["chat_id"]) == (0, 1001)
    assert sandbox.release("sendMessage", token=token) == 0
    assert _bot_messages(sandbox, token) == []
    # count 0 clears the fault's remaining hold
    assert sandbox.fault("sendMessage", count=0, token=token) == {
        "method": "sendMessage", "count": 0
    }
    assert sandbox.api(token, "sendMessage", chat_id=1001, text="now").status_code == 200
    assert _bot_messages(sandbox, token) == ["now"]


def test_fault_fields_are_checked(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    for bad in ({"hold": -1}, {"hold": "long"}, {"error_code": 200}, {"count": "x"}):
        response = sandbox.post("/control/faults", {"method": "sendMessage", "token": token, **bad})
        assert response.status_code == 400, bad
    assert sandbox.post("/control/release", {"token": token}).status_code == 400


def test_a_user_who_blocked_the_bot_gets_nothing_from_it(sandbox: TelegramSandbox) -> None:
    token = _bot(sandbox)
    sandbox.send("hi", user={"id": 2002, "first_name": "Bob"}, token=token)
    sent = sandbox.api(token, "sendMessage", chat_id=1001, text="before").json()["result"]
    sandbox.block(1001, token=token)
    forbidden = {
        "ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"
    }
    for method, params in (
        ("sendMessage", {"text": "x"}),
        ("editMessageText", {"message_id": sent["message_id"], "text": "y"}),
        ("sendChatAction", {"action": "typing"}),
    ):
        response = sandbox.api(token, method, chat_id=1001, **params)
        assert response.status_code == 403, method
        assert response.json() == forbidden
    assert sandbox.api(token, "sendMessage", chat_id=2002, text="x").status_code == 200
    assert sandbox.bot_summary(token)["blocked"] == [1001]
    assert _bot_messages(sandbox, token) == ["before"]
    sandbox.block(1001, blocked=False, token=token)
    assert sandbox.api(token, "sendMessage", chat_id=1001, text="again").status_code == 200
    assert [c["status"] for c in sandbox.calls(token, "sendChatAction")] == [403]
