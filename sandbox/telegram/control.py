"""The JSON control interface under /control/ that tests and the chat page use.

It plays the Telegram users: it writes messages and taps buttons (each queues
an Update for the bot), reads what the bot sent, injects faults and resets.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.telegram import markup
from sandbox.telegram.botapi import TOKEN
from sandbox.telegram.errors import ControlError
from sandbox.telegram.formatting import command_entities, utf16_len
from sandbox.telegram.longpoll import unless_disconnected
from sandbox.telegram.messaging import MAX_TEXT
from sandbox.telegram.state import DEFAULT_USER, JSON, Bot, Chat, Fault, Sandbox

MAX_WAIT = 30.0  # seconds a control long poll may wait
_CHAT_TYPES = ("private", "group", "supergroup", "channel")
_START = re.compile(r"/start(?:@[A-Za-z0-9_]+)?\s+(.*)", re.DOTALL)
_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _body(request: Request) -> JSON:
    try:
        body = await request.json()
    except ValueError:
        raise ControlError(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ControlError(400, "invalid_json", "the body must be a JSON object")
    return body


def _bot(sandbox: Sandbox, token: Any = None, bot_id: Any = None) -> Bot:
    """The bot named by token or bot_id; else the one that most recently called the API."""
    if token:
        if not isinstance(token, str) or not TOKEN.fullmatch(token):
            raise ControlError(400, "invalid_token", "token is not a well-formed bot token")
        return sandbox.bot(token)
    if bot_id not in (None, ""):
        for bot in sandbox.bots.values():
            if str(bot.id) == str(bot_id):
                return bot
        raise ControlError(404, "unknown_bot", f"no bot with id {bot_id} has been seen")
    if sandbox.last_bot is None:
        raise ControlError(409, "no_bot", "no bot has called the Bot API yet; pass a token")
    return sandbox.last_bot


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or value is None:
        raise ControlError(400, f"invalid_{name}", f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"invalid_{name}", f"{name} must be an integer") from None


def _user(value: Any) -> JSON:
    if value is None:
        return dict(DEFAULT_USER)
    if not isinstance(value, dict):
        raise ControlError(400, "invalid_user", "user must be an object")
    user_id = _int(value.get("id"), "user")
    user = {k: v for k, v in value.items() if v not in (None, "")}
    user.update(id=user_id, is_bot=False)
    user.setdefault("first_name", f"User {user_id}")
    return user


def _chat(bot: Bot, value: Any, user: JSON) -> Chat:
    if value is None:
        value = {"id": user["id"], "type": "private"}
    if not isinstance(value, dict) or value.get("type", "private") not in _CHAT_TYPES:
        raise ControlError(400, "invalid_chat", f"chat.type must be one of {_CHAT_TYPES}")
    kind = value.get("type", "private")
    chat_id = _int(value.get("id", user["id"] if kind == "private" else None), "chat")
    info: JSON = {"id": chat_id, "type": kind}
    if kind == "private":
        for key in ("first_name", "last_name", "username"):
            if user.get(key):
                info[key] = user[key]
    else:
        info["title"] = str(value.get("title") or f"Sandbox {kind}")
        if value.get("username"):
            info["username"] = str(value["username"])
    chat = bot.chats.get(chat_id)
    if chat is None:
        chat = bot.chats[chat_id] = Chat(info=info)
    else:
        chat.info.update(info)
    return chat


async def post_message(request: Request) -> Response:
    body = await _body(request)
    sandbox = _sandbox(request)
    bot = _bot(sandbox, body.get("token"), body.get("bot_id"))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or utf16_len(text) > MAX_TEXT:
        raise ControlError(400, "invalid_text", f"text must be 1-{MAX_TEXT} characters")
    start = _START.fullmatch(text)
    if start and not _PAYLOAD.fullmatch(start.group(1)):
        raise ControlError(400, "invalid_start_payload",
                           "a /start payload is 1-64 characters of A-Z a-z 0-9 _ -")
    user = _user(body.get("user"))
    chat = _chat(bot, body.get("chat"), user)
    channel = chat.info["type"] == "channel"
    fields: JSON = {"sender_chat": chat.info} if channel else {"from": user}
    fields["text"] = text
    entities = command_entities(text)
    if entities:
        fields["entities"] = entities
    stored = bot.add_message(chat, fields, from_bot=False)
    update_id = bot.queue("channel_post" if channel else "message", stored.message)
    sandbox.changed()
    return JSONResponse(
        {"update_id": update_id, "message_id": stored.message_id, "chat_id": chat.id}
    )


async def post_callback(request: Request) -> Response:
    body = await _body(request)
    sandbox = _sandbox(request)
    bot = _bot(sandbox, body.get("token"), body.get("bot_id"))
    chat_id = _int(body.get("chat_id"), "chat_id")
    message_id = _int(body.get("message_id"), "message_id")
    data = body.get("data")
    chat = bot.chats.get(chat_id)
    stored = chat.messages.get(message_id) if chat else None
    if chat is None or stored is None or not stored.from_bot:
        raise ControlError(400, "unknown_message", "no such bot message in that chat")
    if not isinstance(data, str) or data not in markup.callback_data(
        stored.message.get("reply_markup")
    ):
        raise ControlError(400, "no_such_button",
                           "that message has no button with this callback_data")
    user = _user(body.get("user"))
    query = bot.new_callback(chat_id, message_id, data)
    payload = {
        "id": query.id, "from": user, "message": dict(stored.message),
        "chat_instance": bot.chat_instance(chat_id), "data": data,
    }
    update_id = bot.queue("callback_query", payload)
    sandbox.changed()
    return JSONResponse({"update_id": update_id, "callback_query_id": query.id})


def _wait(request: Request) -> float:
    raw = request.query_params.get("wait") or "0"
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise ControlError(400, "invalid_wait", f"wait must be 0-{MAX_WAIT:g} seconds")
    return wait


async def get_messages(request: Request) -> Response:
    sandbox = _sandbox(request)
    query = request.query_params
    bot = _bot(sandbox, query.get("token"), query.get("bot_id"))
    chat_id = _int(request.path_params["chat_id"], "chat_id")
    after = _int(query.get("after") or 0, "after")
    since = _int(query["since"], "since") if query.get("since") else None
    wait = _wait(request)

    def ready() -> bool:
        chat = bot.chats.get(chat_id)
        if bot.closed:
            return True
        if since is not None:
            return (chat.version if chat else 0) > since
        if chat is None:
            return False
        return any(m.from_bot and i > after for i, m in chat.messages.items())

    await unless_disconnected(request, sandbox.wait_for(ready, wait))
    chat = bot.chats.get(chat_id)
    messages = [m.view() for i, m in sorted(chat.messages.items()) if i > after] if chat else []
    return JSONResponse({
        "messages": messages, "version": chat.version if chat else 0,
        "chat": chat.info if chat else None, "bot": bot.summary(default=bot is sandbox.last_bot),
    })


async def get_callback(request: Request) -> Response:
    sandbox = _sandbox(request)
    query_id = request.path_params["callback_query_id"]

    def answer() -> JSON | None:
        for bot in sandbox.bots.values():
            query = bot.callbacks.get(query_id)
            if query is not None:
                return query.answer
        return None

    await unless_disconnected(request, sandbox.wait_for(answer, _wait(request)))
    found = answer()
    if found is None:
        raise ControlError(404, "not_answered", "no answer to that callback query (yet)")
    return JSONResponse(found)


async def get_bots(request: Request) -> Response:
    sandbox = _sandbox(request)
    return JSONResponse(
        [bot.summary(default=bot is sandbox.last_bot) for bot in sandbox.bots.values()]
    )


async def post_fault(request: Request) -> Response:
    body = await _body(request)
    bot = _bot(_sandbox(request), body.get("token"), body.get("bot_id"))
    name = body.get("method")
    if not isinstance(name, str) or not name:
        raise ControlError(400, "invalid_method", "method is required")
    error_code = _int(body.get("error_code", 429), "error_code")
    if not 400 <= error_code <= 599:
        raise ControlError(400, "invalid_error_code", "error_code must be 400-599")
    retry_after = body.get("retry_after")
    retry = None if retry_after is None else _int(retry_after, "retry_after")
    if error_code == 429 and retry is None:
        retry = 1
    default = f"Too Many Requests: retry after {retry}" if error_code == 429 else "Bad Request"
    description = str(body.get("description") or default)
    count = _int(body.get("count", 1), "count")
    if count <= 0:
        bot.faults.pop(name.lower(), None)
    else:
        bot.faults[name.lower()] = Fault(error_code, description, retry, count)
    return JSONResponse({"method": name, "count": max(count, 0)})


async def post_reset(request: Request) -> Response:
    _sandbox(request).reset()
    return JSONResponse({"ok": True})


routes = [
    Route("/control/messages", post_message, methods=["POST"]),
    Route("/control/callback", post_callback, methods=["POST"]),
    Route("/control/chats/{chat_id}/messages", get_messages, methods=["GET"]),
    Route("/control/callbacks/{callback_query_id}", get_callback, methods=["GET"]),
    Route("/control/bots", get_bots, methods=["GET"]),
    Route("/control/faults", post_fault, methods=["POST"]),
    Route("/control/reset", post_reset, methods=["POST"]),
]
