"""sendMessage, editMessageText, answerCallbackQuery and sendChatAction."""

from __future__ import annotations

import time
from typing import Any

from sandbox.telegram import markup
from sandbox.telegram.errors import bad_request
from sandbox.telegram.formatting import Entity, parse, utf16_len
from sandbox.telegram.registry import Call, method
from sandbox.telegram.state import JSON, Chat

MAX_TEXT = 4096
_CHAT_ACTIONS = {
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
}
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"


def _text(call: Call) -> tuple[str, list[Entity]]:
    raw = call.params.string("text")
    if not raw:
        raise bad_request("message text is empty")
    explicit = call.params.structured("entities")
    if explicit is not None:
        text, entities = raw, _checked_entities(explicit, utf16_len(raw))
    else:
        text, entities = parse(raw, call.params.string("parse_mode"))
    if not text.strip():
        raise bad_request("message text is empty")
    if utf16_len(text) > MAX_TEXT:
        raise bad_request("message is too long")
    return text, entities


def _checked_entities(value: Any, length: int) -> list[Entity]:
    if not isinstance(value, list):
        raise bad_request("can't parse entities JSON object")
    for entity in value:
        if not (
            isinstance(entity, dict) and isinstance(entity.get("type"), str)
            and isinstance(entity.get("offset"), int) and isinstance(entity.get("length"), int)
        ):
            raise bad_request("can't parse entities: MessageEntity expected")
        if entity["offset"] < 0 or entity["length"] < 0 or (
            entity["offset"] + entity["length"] > length
        ):
            raise bad_request("can't parse entities: entity is beyond the end of the text")
    return [dict(entity) for entity in value]


def _reply_to(call: Call, chat: Chat) -> JSON | None:
    reply = call.params.structured("reply_parameters")
    if isinstance(reply, dict):
        message_id = reply.get("message_id")
        lenient = bool(reply.get("allow_sending_without_reply"))
    else:
        message_id = call.params.integer("reply_to_message_id")
        lenient = call.params.flag("allow_sending_without_reply")
    if message_id is None:
        return None
    stored = chat.messages.get(int(message_id))
    if stored is None:
        if lenient:
            return None
        raise bad_request("message to be replied not found")
    return stored.message


@method("sendMessage")
async def send_message(call: Call) -> JSON:
    chat = call.chat()
    text, entities = _text(call)
    reply_markup = markup.validate(call.params.structured("reply_markup"))
    replied = _reply_to(call, chat)
    fields: JSON = {}
    if chat.info["type"] == "channel":
        fields["sender_chat"] = chat.info
    else:
        fields["from"] = call.bot.sender()
    fields["text"] = text
    if entities:
        fields["entities"] = entities
    if replied is not None:
        fields["reply_to_message"] = replied
    if reply_markup and "inline_keyboard" in reply_markup:
        fields["reply_markup"] = reply_markup  # only inline keyboards belong to the message
    stored = call.bot.add_message(chat, fields, from_bot=True)
    call.sandbox.changed()
    return stored.message


@method("editMessageText")
async def edit_message_text(call: Call) -> JSON:
    if call.params.has("inline_message_id") and not call.params.has("chat_id"):
        raise bad_request("the sandbox does not support inline messages")
    chat = call.chat()
    message_id = call.params.integer("message_id")
    if message_id is None:
        raise bad_request("message identifier is not specified")
    stored = chat.messages.get(message_id)
    if stored is None:
        raise bad_request("message to edit not found")
    if not stored.from_bot:
        raise bad_request("message can't be edited")
    text, entities = _text(call)
    reply_markup = markup.validate(call.params.structured("reply_markup"), inline_only=True)
    old = stored.message
    if (
        old.get("text") == text and old.get("entities", []) == entities
        and old.get("reply_markup") == reply_markup
    ):
        raise bad_request(_NOT_MODIFIED)
    now = time.time()
    new = {k: v for k, v in old.items() if k not in ("entities", "reply_markup")}
    new.update(text=text, edit_date=int(now))
    if entities:
        new["entities"] = entities
    if reply_markup:
        new["reply_markup"] = reply_markup
    stored.message = new
    stored.edit_count += 1
    stored.edited_at = now
    chat.version += 1
    call.sandbox.changed()
    return new


@method("answerCallbackQuery")
async def answer_callback_query(call: Call) -> bool:
    query_id = call.params.string("callback_query_id") or ""
    query = call.bot.callbacks.get(query_id)
    if query is None or query.answer is not None:
        raise bad_request(_QUERY_INVALID)
    text = call.params.string("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query.answer = {
        "callback_query_id": query.id, "text": text,
        "show_alert": call.params.flag("show_alert"), "url": call.params.string("url"),
        "cache_time": call.params.integer("cache_time", 0), "answered_at": time.time(),
    }
    call.sandbox.changed()
    return True


@method("sendChatAction")
async def send_chat_action(call: Call) -> bool:
    call.chat()
    if call.params.string("action") not in _CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    return True
