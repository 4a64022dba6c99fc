"""The JSON control interface under /control/ that tests and the chat page use.

It plays the Telegram users: it writes messages and taps buttons (each queues
an Update for the bot; a JSON array body does many in order and answers an
array), reads what the bot sent and the record of its calls, sets the flood
limits and resets. Faults, holds and blocked users are in control_faults.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.telegram import markup
from sandbox.telegram.control_args import (
    bot_for,
    integer,
    number,
    read_bodies,
    read_body,
    sandbox_of,
    wait_seconds,
)
from sandbox.telegram.control_guard import guarded
from sandbox.telegram.errors import ControlError
from sandbox.telegram.flood import Limits
from sandbox.telegram.formatting import command_entities, utf16_len
from sandbox.telegram.longpoll import unless_disconnected
from sandbox.telegram.messaging import MAX_TEXT
from sandbox.telegram.state import DEFAULT_USER, JSON, Bot, Chat, Sandbox

_CHAT_TYPES = ("private", "group", "supergroup", "channel")
_START = re.compile(r"/start(?:@[A-Za-z0-9_]+)?\s+(.*)", re.DOTALL)
_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _user(value: Any) -> JSON:
    if value is None:
        return dict(DEFAULT_USER)
    if not isinstance(value, dict):
        raise ControlError(400, "invalid_user", "user must be an object")
    user_id = integer(value.get("id"), "user")
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
    chat_id = integer(value.get("id", user["id"] if kind == "private" else None), "chat")
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
        chat = bot.add_chat(Chat(info=info))
    else:
        chat.info.update(info)
    return chat


async def _each(request: Request, one: Callable[[Sandbox, JSON], JSON]) -> Response:
    """Apply `one` to the body, or to each object of a batch in order (the first invalid one
    ends the batch with its error; the ones before it are done); then wake the long polls."""
    sandbox = sandbox_of(request)
    bodies, batch = await read_bodies(request)
    try:
        results = [one(sandbox, body) for body in bodies]
    finally:
        sandbox.changed()
    return JSONResponse(results if batch else results[0])


async def post_message(request: Request) -> Response:
    return await _each(request, _message)


def _message(sandbox: Sandbox, body: JSON) -> JSON:
    bot = bot_for(sandbox, body.get("token"), body.get("bot_id"))
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
    return {"update_id": update_id, "message_id": stored.message_id, "chat_id": chat.id}


async def post_callback(request: Request) -> Response:
    return await _each(request, _callback)


def _callback(sandbox: Sandbox, body: JSON) -> JSON:
    bot = bot_for(sandbox, body.get("token"), body.get("bot_id"))
    chat_id = integer(body.get("chat_id"), "chat_id")
    message_id = integer(body.get("message_id"), "message_id")
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
    return {"update_id": update_id, "callback_query_id": query.id}


async def get_messages(request: Request) -> Response:
    sandbox = sandbox_of(request)
    query = request.query_params
    bot = bot_for(sandbox, query.get("token"), query.get("bot_id"))
    chat_id = integer(request.path_params["chat_id"], "chat_id")
    after = integer(query.get("after") or 0, "after")
    since = integer(query["since"], "since") if query.get("since") else None
    wait = wait_seconds(request)

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
    sandbox = sandbox_of(request)
    query_id = request.path_params["callback_query_id"]

    def answer() -> JSON | None:
        for bot in sandbox.bots.values():
            query = bot.callbacks.get(query_id)
            if query is not None:
                return query.answer
        return None

    await unless_disconnected(request, sandbox.wait_for(answer, wait_seconds(request)))
    found = answer()
    if found is None:
        raise ControlError(404, "not_answered", "no answer to that callback query (yet)")
    return JSONResponse(found)


async def get_bots(request: Request) -> Response:
    sandbox = sandbox_of(request)
    return JSONResponse(
        [bot.summary(default=bot is sandbox.last_bot) for bot in sandbox.bots.values()]
    )


async def get_calls(request: Request) -> Response:
    """`?token=|bot_id=&method=&since=`: the bot's recorded calls (record.py) in order."""
    query = request.query_params
    bot = bot_for(sandbox_of(request), query.get("token"), query.get("bot_id"))
    since = query.get("since")
    after = number(since, "since", 0, float("inf")) if since else None
    return JSONResponse({"calls": bot.record.query(query.get("method") or None, after)})


async def limits(request: Request) -> Response:
    """GET: the flood limits (flood.py). POST `{"send_rate"?, "chat_burst"?, "chat_window"?}`:
    change the ones given (0 turns a limit off) and answer the limits now in force."""
    sandbox = sandbox_of(request)
    if request.method == "POST":
        body = await read_body(request)
        unknown = set(body) - {"send_rate", "chat_burst", "chat_window"}
        if unknown:
            raise ControlError(400, "invalid_limits", f"unknown limits: {sorted(unknown)}")
        now = sandbox.limits
        sandbox.set_limits(Limits(
            send_rate=_count(body.get("send_rate", now.send_rate), "send_rate"),
            chat_burst=_count(body.get("chat_burst", now.chat_burst), "chat_burst"),
            chat_window=number(body.get("chat_window", now.chat_window), "chat_window", 0, 86400),
        ))
    return JSONResponse(sandbox.limits.view())


def _count(value: Any, name: str) -> int:
    result = integer(value, name)
    if result < 0 or (isinstance(value, float) and not value.is_integer()):
        raise ControlError(400, f"invalid_{name}", f"{name} must be 0 or more")
    return result


async def post_reset(request: Request) -> Response:
    """Forget every bot, chat, update, fault and record; restore the limits given at start."""
    sandbox_of(request).reset()
    return JSONResponse({"ok": True})


routes = guarded([
    Route("/control/messages", post_message, methods=["POST"]),
    Route("/control/callback", post_callback, methods=["POST"]),
    Route("/control/chats/{chat_id}/messages", get_messages, methods=["GET"]),
    Route("/control/callbacks/{callback_query_id}", get_callback, methods=["GET"]),
    Route("/control/bots", get_bots, methods=["GET"]),
    Route("/control/calls", get_calls, methods=["GET"]),
    Route("/control/limits", limits, methods=["GET", "POST"]),
    Route("/control/reset", post_reset, methods=["POST"]),
])
