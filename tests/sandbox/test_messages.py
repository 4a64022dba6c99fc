"""sendMessage and editMessageText: the rules Telegram enforces, and the entities it returns."""

from __future__ import annotations

from typing import Any

from tests.fixtures.sandbox import TelegramSandbox, make_token


def _bot_with_chat(sandbox: TelegramSandbox) -> str:
    """A bot that chat 1001 wrote to, with no flood limits: these tests send in bursts."""
    token = make_token()
    sandbox.send("hello", token=token)
    sandbox.set_limits(send_rate=0, chat_burst=0)
    return token


def _send(sandbox: TelegramSandbox, token: str, **params: Any) -> Any:
    params.setdefault("chat_id", 1001)
    return sandbox.api(token, "sendMessage", **params)


def test_user_commands_carry_a_bot_command_entity(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("/start abc_DEF-1", token=token)
    group = {"id": -100123, "type": "supergroup", "title": "Team"}
    sandbox.send("/code@sandbox7_bot now", chat=group, token=token)
    sandbox.send("plain text", token=token)
    updates = sandbox.api(token, "getUpdates").json()["result"]
    start, grouped, plain = (u["message"] for u in updates)
    assert start["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert grouped["entities"] == [{"type": "bot_command", "offset": 0, "length": 18}]
    assert grouped["chat"] == {"id": -100123, "type": "supergroup", "title": "Team"}
    assert "entities" not in plain


def test_channel_messages_arrive_as_channel_posts(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("news", chat={"id": -1009, "type": "channel", "title": "News"}, token=token)
    (update,) = sandbox.api(token, "getUpdates").json()["result"]
    assert update["channel_post"]["sender_chat"]["id"] == -1009
    assert "message" not in update


def test_deep_link_payloads_are_validated(sandbox: TelegramSandbox) -> None:
    token = make_token()
    assert sandbox.send("/start " + "a" * 64, token=token)["message_id"] == 1
    for bad in ("/start " + "a" * 65, "/start has space", "/start café", "/start a.b"):
        response = sandbox.post("/control/messages", {"token": token, "text": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"] == "invalid_start_payload"


def test_user_text_length_is_1_to_4096(sandbox: TelegramSandbox) -> None:
    token = make_token()
    assert sandbox.send("x" * 4096, token=token)
    for bad in ("", "x" * 4097):
        response = sandbox.post("/control/messages", {"token": token, "text": bad})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_text"


def test_send_message_text_rules(sandbox: TelegramSandbox) -> None:
    token = _bot_with_chat(sandbox)
    assert _send(sandbox, token, text="x" * 4096).status_code == 200
    too_long = _send(sandbox, token, text="x" * 4097)
    assert too_long.status_code == 400
    assert too_long.json()["description"] == "Bad Request: message is too long"
    assert _send(sandbox, token, text="").json()["description"] == (
        "Bad Request: message text is empty"
    )
    # the limit applies after entity parsing
    assert _send(sandbox, token, text="<b>" + "x" * 4096 + "</b>", parse_mode="HTML").is_success
    unknown = _send(sandbox, token, chat_id=999, text="hi")
    assert unknown.json() == {
        "ok": False, "error_code": 400, "description": "Bad Request: chat not found"
    }


def test_send_message_returns_the_message(sandbox: TelegramSandbox) -> None:
    token = _bot_with_chat(sandbox)
    first = _send(sandbox, token, text="one").json()["result"]
    second = _send(sandbox, token, text="two", reply_parameters={"message_id": 1}).json()["result"]
    assert (first["message_id"], second["message_id"]) == (2, 3)  # the user's message is 1
    assert first["from"]["is_bot"] is True
    assert first["chat"]["id"] == 1001
    assert isinstance(first["date"], int)
    assert second["reply_to_message"]["text"] == "hello"
    view = sandbox.messages(1001, after=1, token=token)
    assert [m["text"] for m in view] == ["one", "two"]
    assert all(m["from_bot"] and isinstance(m["sent_at"], float) for m in view)


def test_html_and_markdown_v2_become_entities_with_utf16_offsets(
    sandbox: TelegramSandbox,
) -> None:
    token = _bot_with_chat(sandbox)
    html = _send(
        sandbox, token, text="😀 <b>Code</b>: <code>1234 &amp; 5</code>", parse_mode="HTML"
    )
    message = html.json()["result"]
    assert message["text"] == "😀 Code: 1234 & 5"
    assert message["entities"] == [
        {"type": "bold", "offset": 3, "length": 4},
        {"type": "code", "offset": 9, "length": 8},
    ]
    md = _send(sandbox, token, text="😀 *Code*: `1234` _it_ 1\\.5", parse_mode="MarkdownV2")
    message = md.json()["result"]
    assert message["text"] == "😀 Code: 1234 it 1.5"
    assert message["entities"] == [
        {"type": "bold", "offset": 3, "length": 4},
        {"type": "code", "offset": 9, "length": 4},
        {"type": "italic", "offset": 14, "length": 2},
    ]
    explicit = [{"type": "code", "offset": 0, "length": 4}]
    kept = _send(sandbox, token, text="1234 x", entities=explicit).json()["result"]
    assert kept["entities"] == explicit


def test_bad_markup_in_text_is_400(sandbox: TelegramSandbox) -> None:
    token = _bot_with_chat(sandbox)
    reserved = _send(sandbox, token, text="Done.", parse_mode="MarkdownV2")
    assert reserved.status_code == 400
    assert "can't parse entities" in reserved.json()["description"]
    unclosed = _send(sandbox, token, text="<b>bold", parse_mode="HTML")
    assert unclosed.status_code == 400
    unknown_tag = _send(sandbox, token, text="<blink>x</blink>", parse_mode="HTML")
    assert unknown_tag.status_code == 400


def test_inline_keyboard_rules(sandbox: TelegramSandbox) -> None:
    token = _bot_with_chat(sandbox)

    def send(*buttons: dict[str, Any]) -> Any:
        return _send(sandbox, token, text="k", reply_markup={"inline_keyboard": [list(buttons)]})

    assert send({"text": "ok", "callback_data": "x" * 64}).status_code == 200
    assert send({"text": "copy", "copy_text": {"text": "12345678"}}).status_code == 200
    assert send({"text": "open", "url": "https://t.me/x?start=abc"}).status_code == 200
    too_long = send({"text": "ok", "callback_data": "x" * 65})
    assert too_long.status_code == 400
    assert too_long.json()["description"] == "Bad Request: BUTTON_DATA_INVALID"
    multibyte = send({"text": "ok", "callback_data": "я" * 33})  # 66 bytes
    assert multibyte.json()["description"] == "Bad Request: BUTTON_DATA_INVALID"
    assert send({"text": "ok", "callback_data": ""}).status_code == 400
    assert send({"text": "plain"}).status_code == 400
    assert send({"text": "two", "callback_data": "a", "url": "https://x.org"}).status_code == 400
    assert send({"callback_data": "a"}).status_code == 400
    assert send({"text": "copy", "copy_text": {"text": ""}}).status_code == 400
    assert send({"text": "copy", "copy_text": {"text": "x" * 257}}).status_code == 400


def test_edit_message_text_and_not_modified(sandbox: TelegramSandbox) -> None:
    token = _bot_with_chat(sandbox)
    keyboard = {"inline_keyboard": [[{"text": "Approve", "callback_data": "approve"}]]}
    sent = _send(sandbox, token, text="Log in?", reply_markup=keyboard).json()["result"]
    edit = {"chat_id": 1001, "message_id": sent["message_id"]}

    same = sandbox.api(token, "editMessageText", text="Log in?", reply_markup=keyboard, **edit)
    assert same.status_code == 400
    assert same.json()["description"].startswith("Bad Request: message is not modified")

    edited = sandbox.api(token, "editMessageText", text="<b>Approved</b>", parse_mode="HTML",
                         **edit)
    assert edited.status_code == 200
    result = edited.json()["result"]
    assert result["text"] == "Approved"
    assert result["entities"] == [{"type": "bold", "offset": 0, "length": 8}]
    assert "reply_markup" not in result  # an edit without reply_markup removes the keyboard
    assert isinstance(result["edit_date"], int)
    (view,) = sandbox.messages(1001, after=1, token=token)
    assert (view["edited"], view["edit_count"], view["text"]) == (True, 1, "Approved")

    missing = sandbox.api(token, "editMessageText", chat_id=1001, message_id=99, text="x")
    assert missing.json()["description"] == "Bad Request: message to edit not found"
    users = sandbox.api(token, "editMessageText", chat_id=1001, message_id=1, text="x")
    assert users.status_code == 400
