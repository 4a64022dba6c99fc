"""Bounded history: what a bot's chats, callback queries and pending updates keep at most,
and that the bot goes on working at the bounds."""

from __future__ import annotations

from typing import Any

from tests.fixtures.sandbox import TelegramSandbox, make_token

MAX_CHAT_MESSAGES = 200
MAX_CHATS = 10_000
MAX_CALLBACKS = 10_000
MAX_PENDING_UPDATES = 100_000
BATCH = 10_000  # the most one control batch takes


def _batch(sandbox: TelegramSandbox, path: str, bodies: list[dict[str, Any]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(bodies), BATCH):
        response = sandbox.post(path, bodies[start:start + BATCH])
        assert response.status_code == 200, response.text
        results.extend(response.json())
    return results


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "first_name": f"U{user_id}"}


def test_a_chat_keeps_its_last_200_messages(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sent = _batch(sandbox, "/control/messages",
                  [{"token": token, "text": f"m{n}"} for n in range(1, 251)])
    assert [s["message_id"] for s in sent] == list(range(1, 251))
    kept = sandbox.messages(1001, token=token)
    assert len(kept) == MAX_CHAT_MESSAGES
    assert (kept[0]["text"], kept[-1]["text"]) == ("m51", "m250")

    reply = sandbox.api(token, "sendMessage", chat_id=1001, text="still here",
                        reply_parameters={"message_id": 250}).json()["result"]
    assert reply["message_id"] == 251  # ids keep counting
    assert reply["reply_to_message"]["text"] == "m250"
    gone = sandbox.api(token, "sendMessage", chat_id=1001, text="x",
                       reply_parameters={"message_id": 1})
    assert gone.json()["description"] == "Bad Request: message to be replied not found"
    kept = sandbox.messages(1001, token=token)
    assert len(kept) == MAX_CHAT_MESSAGES
    assert kept[-1]["text"] == "still here"
    assert sandbox.messages(1001, after=249, token=token)[-1]["from_bot"] is True
    updates = sandbox.api(token, "getUpdates", offset=250).json()["result"]
    assert [u["message"]["text"] for u in updates] == ["m250"]


def test_a_bot_keeps_its_most_recently_active_chats(sandbox: TelegramSandbox) -> None:
    token = make_token()
    first = 1_000_000
    _batch(sandbox, "/control/messages", [
        {"token": token, "text": "hi", "user": _user(first + n)} for n in range(MAX_CHATS)
    ])
    sandbox.send("still me", user=_user(first), token=token)  # the oldest chat is active again
    sandbox.send("hi", user=_user(first + MAX_CHATS), token=token)  # one chat too many
    chats = sandbox.bot_summary(token)["chats"]
    assert len(chats) == MAX_CHATS
    assert first in chats
    assert first + 1 not in chats  # the least recently active one is forgotten
    assert sandbox.api(token, "sendMessage", chat_id=first, text="ok").status_code == 200
    forgotten = sandbox.api(token, "sendMessage", chat_id=first + 1, text="x")
    assert forgotten.json()["description"] == "Bad Request: chat not found"
    sandbox.send("back", user=_user(first + 1), token=token)  # a new message brings it back
    assert sandbox.api(token, "sendMessage", chat_id=first + 1, text="ok").status_code == 200
    assert len(sandbox.bot_summary(token)["chats"]) == MAX_CHATS


def test_the_oldest_callback_queries_are_forgotten(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    keyboard = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    message = sandbox.api(token, "sendMessage", chat_id=1001, text="Sure?",
                          reply_markup=keyboard).json()["result"]
    tap = {"token": token, "chat_id": 1001, "message_id": message["message_id"], "data": "yes"}
    taps = _batch(sandbox, "/control/callback", [tap] * (MAX_CALLBACKS + 5))
    assert sandbox.bot_summary(token)["callback_queries"] == MAX_CALLBACKS
    ids = [tap["callback_query_id"] for tap in taps]
    oldest = sandbox.api(token, "answerCallbackQuery", callback_query_id=ids[4])
    assert oldest.status_code == 400
    kept = sandbox.api(token, "answerCallbackQuery", callback_query_id=ids[5])
    assert kept.json()["result"] is True
    assert sandbox.callback_answer(ids[5]) is not None


def test_pending_updates_beyond_the_bound_drop_the_oldest(sandbox: TelegramSandbox) -> None:
    token = make_token()
    extra = 7
    sent = _batch(sandbox, "/control/messages",
                  [{"token": token, "text": "m"}] * (MAX_PENDING_UPDATES + extra))
    assert sandbox.bot_summary(token)["pending_update_count"] == MAX_PENDING_UPDATES
    first = sandbox.api(token, "getUpdates", limit=1).json()["result"]
    assert first[0]["update_id"] == sent[extra]["update_id"]
    last = sent[-1]["update_id"]
    assert sandbox.api(token, "getUpdates", offset=last + 1).json()["result"] == []
    fresh = sandbox.send("/start", token=token)
    (update,) = sandbox.api(token, "getUpdates", offset=last + 1).json()["result"]
    assert update["update_id"] == fresh["update_id"] == last + 1
    assert sandbox.api(token, "sendMessage", chat_id=1001, text="hello").status_code == 200
