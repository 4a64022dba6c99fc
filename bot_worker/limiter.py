"""Telegram's flood limits for every bot process together, as a python-telegram-bot
rate limiter (the library's hook for exactly this job).

Messages (sendMessage, editMessageText) wait for a slot reserved in Redis
(`shared.flood`); a 429 from Telegram sets a flood wait every process honours,
then the call is tried again. While Redis is unreachable the limiter lets
sends through (Telegram's own 429s still hold them back), so a Redis outage
never silences the bot's "temporarily unavailable" replies.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bot_worker.dispatch import RedisHealth
from shared.flood import FloodControl
from shared.store import Unavailable

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]
# the Bot API methods that send a message a user sees
LIMITED = frozenset({"sendMessage", "editMessageText"})
# how often one call is tried again after a 429 before its update is retried as a whole
MAX_RETRIES = 5


def retry_seconds(error: RetryAfter) -> float:
    """`retry_after` in seconds, whichever type python-telegram-bot hands it out as."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the int form is deprecated in v22
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class SharedRateLimiter(BaseRateLimiter[None]):
    """Reserve each message's slot in Redis; honour every 429 across processes."""

    def __init__(self) -> None:
        self.flood: FloodControl | None = None  # attached once Redis and the bot id are known
        self.health: RedisHealth | None = None  # skip the slot while Redis just failed
        self._warned = False

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _shared(self) -> bool:
        """Whether slots go through Redis now (not before start-up, not while it fails)."""
        return self.flood is not None and not (self.health is not None and self.health.down)

    async def _reserve(self, chat_id: int | str | None) -> None:
        if not self._shared() or self.flood is None:
            return
        while True:
            try:
                wait_ms = await self.flood.reserve(chat_id)
            except Unavailable as exc:
                if self.health is not None:
                    self.health.failed()
                if not self._warned:
                    logger.warning("flood limits not shared while Redis is unavailable: %s", exc)
                    self._warned = True
                return
            self._warned = False
            if wait_ms <= 0:
                return
            await asyncio.sleep(wait_ms / 1000)

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | JSONDict | list[JSONDict]:
        limited = endpoint in LIMITED
        chat_id = data.get("chat_id")
        for attempt in range(MAX_RETRIES + 1):
            if limited:
                await self._reserve(chat_id)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                if attempt == MAX_RETRIES:
                    raise
                logger.warning("Telegram asked to wait %.0f s before %s (429)", seconds, endpoint)
                flood = self.flood
                if limited and flood is not None and self._shared():
                    try:
                        # every process holds its sends; the next reservation waits
                        await flood.hold(seconds)
                        continue
                    except Unavailable:
                        pass
                await asyncio.sleep(seconds)  # held here at least, whatever Redis does
        raise AssertionError("unreachable")  # pragma: no cover
