"""What a Bot API call meets before its handler runs, in this order:

1. a flood wait covering the method (and chat): 429 with the seconds left;
2. an injected fault (POST /control/faults): an error answered at once (a 429
   also starts a flood wait of its `retry_after`), or a hold: the call waits
   `hold` seconds or until released, then goes on; if the client disconnects
   during the hold, the call ends there, not performed;
3. a user who blocked the bot: 403 for sendMessage, editMessageText and
   sendChatAction to that chat;
4. the flood limits (flood.py), for sendMessage and editMessageText: a message
   over a limit is 429 and starts the matching wait.

A call that passes all four is performed by its handler.
"""

from __future__ import annotations

import time

from sandbox.telegram.errors import ApiError
from sandbox.telegram.longpoll import unless_disconnected
from sandbox.telegram.registry import Call
from sandbox.telegram.state import Fault

MESSAGES = frozenset({"sendmessage", "editmessagetext"})  # what the flood limits count
BLOCKABLE = MESSAGES | {"sendchataction"}
BLOCKED = "Forbidden: bot was blocked by the user"


def too_many(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


async def admit(call: Call, method: str, chat_id: int | None) -> bool:
    """True when the call (of lower-case `method`) may be performed; False when its client
    left during a hold; raises the ApiError to answer instead."""
    bot = call.bot
    left = bot.flood.waiting(method, chat_id, time.monotonic())
    if left is not None:
        raise too_many(left)
    fault = bot.take_fault(method)
    if fault is not None:
        if fault.hold is None:
            raise _failure(call, method, fault)
        if not await _hold(call, method, fault.hold):
            return False
    if method in BLOCKABLE and chat_id is not None and chat_id in bot.blocked:
        raise ApiError(403, BLOCKED)
    if method in MESSAGES:
        retry = bot.flood.admit(method, chat_id, call.sandbox.limits, time.monotonic())
        if retry is not None:
            raise too_many(retry)
    return True


def _failure(call: Call, method: str, fault: Fault) -> ApiError:
    if fault.error_code == 429 and fault.retry_after:
        call.bot.flood.start_wait(method, None, fault.retry_after, time.monotonic(),
                                  by_limit=False)
    extra = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
    return ApiError(fault.error_code, fault.description, extra)


async def _hold(call: Call, method: str, seconds: float) -> bool:
    """Wait `seconds`, or until POST /control/release or a reset; False if the client left."""
    bot, sandbox = call.bot, call.sandbox
    generation = bot.releases[method]

    async def held() -> bool:
        await sandbox.wait_for(lambda: bot.releases[method] != generation or bot.closed, seconds)
        return True

    bot.holding[method] += 1
    try:
        return await unless_disconnected(call.request, held()) is not None
    finally:
        bot.holding[method] -= 1
        if not bot.holding[method]:
            del bot.holding[method]
