"""The Bot API endpoint `/bot<token>/<method>` and the small methods.

Importing this module registers every handler (messaging, updates) in the table.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.telegram import messaging, updates
from sandbox.telegram.errors import ApiError, bad_request
from sandbox.telegram.params import read_params
from sandbox.telegram.registry import METHODS, Call, Described, method
from sandbox.telegram.state import JSON, Sandbox

__all__ = ["endpoint", "messaging", "updates"]

TOKEN = re.compile(r"(\d{1,20}):[A-Za-z0-9_-]{35,}")
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")


async def endpoint(request: Request) -> Response:
    token: str = request.path_params["token"]
    name: str = request.path_params["method"]
    sandbox: Sandbox = request.app.state.sandbox
    try:
        if not TOKEN.fullmatch(token):
            raise ApiError(401, "Unauthorized")
        bot = sandbox.bot(token)
        sandbox.last_bot = bot
        handler = METHODS.get(name.lower())
        if handler is None:
            raise ApiError(404, "Not Found")
        params = await read_params(request)
        bot.calls[name.lower()] += 1
        fault = bot.take_fault(name.lower())
        if fault is not None:
            extra = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            raise ApiError(fault.error_code, fault.description, extra)
        result = await handler(Call(sandbox, bot, params, request))
    except ApiError as error:
        return error.response()
    body: dict[str, Any] = {"ok": True}
    if isinstance(result, Described):
        body.update(result=result.result, description=result.description)
    else:
        body["result"] = result
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
