"""Control endpoints that make the Bot API misbehave for one bot (token or bot_id in the body,
else the bot that last called the API), as admission.py applies them:

- `POST /control/faults {"method", "count"?: 1, "error_code"?: 429, "retry_after"?,
  "description"?}`: the next `count` calls of `method` fail with that error (a 429
  without `retry_after` says 1; it also starts a flood wait). With `"hold": seconds`
  instead, the next `count` calls wait that long (or until released) before being
  performed, and are not performed if their client disconnects meanwhile.
  `count` 0 clears the method's fault.
- `POST /control/release {"method"}`: every call of `method` held now goes on at once;
  answers how many were released.
- `POST /control/block {"chat_id", "blocked"?: true}`: while blocked, sendMessage,
  editMessageText and sendChatAction to that chat are 403 "bot was blocked by the user".
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.telegram.control_args import bot_for, integer, number, read_body, sandbox_of
from sandbox.telegram.control_guard import guarded
from sandbox.telegram.errors import ControlError
from sandbox.telegram.state import JSON, Bot, Fault

MAX_HOLD = 3600.0  # seconds a held call may be kept waiting


async def _target(request: Request) -> tuple[JSON, Bot, str]:
    """The body, the bot it names, and its `method` (lower-case), which is required."""
    body = await read_body(request)
    bot = bot_for(sandbox_of(request), body.get("token"), body.get("bot_id"))
    name = body.get("method")
    if not isinstance(name, str) or not name:
        raise ControlError(400, "invalid_method", "method is required")
    return body, bot, name.lower()


async def post_fault(request: Request) -> Response:
    body, bot, method = await _target(request)
    count = integer(body.get("count", 1), "count")
    if count <= 0:
        bot.faults.pop(method, None)
        return JSONResponse({"method": body["method"], "count": 0})
    if body.get("hold") is not None:
        hold = number(body["hold"], "hold", 0, MAX_HOLD)
        bot.faults[method] = Fault(0, "", None, count, hold=hold)
        return JSONResponse({"method": body["method"], "count": count, "hold": hold})
    error_code = integer(body.get("error_code", 429), "error_code")
    if not 400 <= error_code <= 599:
        raise ControlError(400, "invalid_error_code", "error_code must be 400-599")
    retry_after = body.get("retry_after")
    retry = None if retry_after is None else integer(retry_after, "retry_after")
    if error_code == 429 and retry is None:
        retry = 1
    default = f"Too Many Requests: retry after {retry}" if error_code == 429 else "Bad Request"
    description = str(body.get("description") or default)
    bot.faults[method] = Fault(error_code, description, retry, count)
    return JSONResponse({"method": body["method"], "count": count})


async def post_release(request: Request) -> Response:
    body, bot, method = await _target(request)
    released = bot.holding[method]
    bot.releases[method] += 1
    sandbox_of(request).changed()
    return JSONResponse({"method": body["method"], "released": released})


async def post_block(request: Request) -> Response:
    body = await read_body(request)
    bot = bot_for(sandbox_of(request), body.get("token"), body.get("bot_id"))
    chat_id = integer(body.get("chat_id"), "chat_id")
    blocked = body.get("blocked", True)
    if not isinstance(blocked, bool):
        raise ControlError(400, "invalid_blocked", "blocked must be true or false")
    if blocked:
        bot.blocked.add(chat_id)
    else:
        bot.blocked.discard(chat_id)
    return JSONResponse({"chat_id": chat_id, "blocked": blocked})


routes = guarded([
    Route("/control/faults", post_fault, methods=["POST"]),
    Route("/control/release", post_release, methods=["POST"]),
    Route("/control/block", post_block, methods=["POST"]),
])
