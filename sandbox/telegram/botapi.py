"""The Bot API endpoint `/bot<token>/<method>` and the small methods.

Importing this module registers every handler (messaging, updates) in the table.
Each call passes admission (admission.py: flood waits, faults, holds, blocked
users, flood limits) before its handler, and is recorded once answered.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.telegram import messaging, updates
from sandbox.telegram.admission import admit
from sandbox.telegram.errors import ApiError, bad_request
from sandbox.telegram.params import read_params
from sandbox.telegram.registry import METHODS, NAMES, Call, Described, method
from sandbox.telegram.state import JSON, Sandbox

__all__ = ["endpoint", "messaging", "updates"]

TOKEN = re.compile(r"(\d{1,20}):[A-Za-z0-9_-]{35,}")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")


async def endpoint(request: Request) -> Response:
    token: str = request.path_params["token"]
    key = str(request.path_params["method"]).lower()
    name = NAMES.get(key, request.path_params["method"])
    sandbox: Sandbox = request.app.state.sandbox
    if not TOKEN.fullmatch(token):
        return ApiError(401, "Unauthorized").response()
    bot = sandbox.bot(token)
    sandbox.last_bot = bot
    chat_id: int | None = None
    try:
        handler = METHODS.get(key)
        if handler is None:
            raise ApiError(404, "Not Found")
        call = Call(sandbox, bot, await read_params(request), request)
        chat_id = call.chat_id()
        bot.calls[key] += 1
        if not await admit(call, key, chat_id):
            bot.answered(name, 0, chat_id)  # the client left during a hold: nothing was done
            return Response(status_code=204)
        result = await handler(call)
    except ApiError as error:
        retry = (error.parameters or {}).get("retry_after")
        bot.answered(name, error.error_code, chat_id, retry if isinstance(retry, int) else None)
        return error.response()
    except Exception:
        bot.answered(name, 500, chat_id)  # the app's handler logs it and answers 500
        raise
    body: dict[str, Any] = {"ok": True}
    if isinstance(result, Described):
        body.update(result=result.result, description=result.description)
    else:
        body["result"] = result
    bot.answered(name, 200, chat_id)
    return JSONResponse(body)


@method("getMe")
async def get_me(call: Call) -> JSON:
    return call.bot.user()


@method("close")
async def close(call: Call) -> bool:
    return True


@method("logOut")
async def log_out(call: Call) -> bool:
    return True


def _commands_key(call: Call) -> str:
    scope = call.params.structured("scope") or {"type": "default"}
    if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
        raise bad_request("can't parse BotCommandScope JSON object")
    language = call.params.string("language_code") or ""
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise bad_request("invalid language code specified")
    return json.dumps(scope, sort_keys=True) + "|" + language


@method("setMyCommands")
async def set_my_commands(call: Call) -> bool:
    commands = call.params.structured("commands")
    if not isinstance(commands, list) or len(commands) > 100:
        raise bad_request("can't parse commands JSON object")
    for command in commands:
        if not isinstance(command, dict):
            raise bad_request("can't parse BotCommand JSON object")
        if not _COMMAND.fullmatch(str(command.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        description = command.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    key = _commands_key(call)
    if commands:
        call.bot.commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
    else:
        call.bot.commands.pop(key, None)
    return True


@method("getMyCommands")
async def get_my_commands(call: Call) -> list[JSON]:
    return call.bot.commands.get(_commands_key(call), [])


@method("deleteMyCommands")
async def delete_my_commands(call: Call) -> bool:
    call.bot.commands.pop(_commands_key(call), None)
    return True
