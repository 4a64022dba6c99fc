"""Reading control requests: JSON bodies, the bot a request names, integers, numbers, waits."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request

from sandbox.telegram.botapi import TOKEN
from sandbox.telegram.errors import ControlError
from sandbox.telegram.state import JSON, Bot, Sandbox

MAX_WAIT = 30.0  # seconds a control long poll may wait
MAX_BATCH = 10_000  # objects one batch (a JSON array body) may hold


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def read_body(request: Request) -> JSON:
    """The body, which must be a JSON object."""
    bodies, batch = await read_bodies(request)
    if batch:
        raise ControlError(400, "invalid_json", "the body must be a JSON object")
    return bodies[0]


async def read_bodies(request: Request) -> tuple[list[JSON], bool]:
    """The body as a list of objects, and whether it was a JSON array (a batch)."""
    try:
        body = await request.json()
    except ValueError:
        raise ControlError(400, "invalid_json", "the body must be a JSON object") from None
    if isinstance(body, dict):
        return [body], False
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ControlError(400, "invalid_json", "the body must be a JSON object or array of them")
    if len(body) > MAX_BATCH:
        raise ControlError(400, "batch_too_large", f"a batch holds at most {MAX_BATCH} objects")
    return body, True


def bot_for(sandbox: Sandbox, token: Any = None, bot_id: Any = None) -> Bot:
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


def integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or value is None:
        raise ControlError(400, f"invalid_{name}", f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"invalid_{name}", f"{name} must be an integer") from None


def number(value: Any, name: str, low: float, high: float) -> float:
    """A finite number in [low, high] (a JSON number or a numeric string)."""
    try:
        result = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        result = math.nan
    if not low <= result <= high:
        raise ControlError(
            400, f"invalid_{name}", f"{name} must be a number from {low:g} to {high:g}"
        )
    return result


def wait_seconds(request: Request) -> float:
    """The `wait` query parameter of a control long poll, 0 to MAX_WAIT."""
    raw = request.query_params.get("wait") or "0"
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise ControlError(400, "invalid_wait", f"wait must be 0-{MAX_WAIT:g} seconds")
    return wait
