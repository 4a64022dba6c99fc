"""Telegram's flood limits, held by all bot processes together.

Before each message (sendMessage, editMessageText) a process reserves a slot
with one script: at most `send_rate` sends in any `SEND_WINDOW_MS` across the
bot, and at most `CHAT_BURST` to one chat in any `CHAT_WINDOW_MS` (about one a
second, short bursts allowed, as Telegram allows). A 429 from Telegram sets a
flood wait that every process honours before its next send.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from shared import keys
from shared.redis import scripts, unavailable_on_error

# the window `send_rate` counts in: a second, plus a margin for the time a request
# takes to reach Telegram after its slot was reserved (ms)
SEND_WINDOW_MS = 1_050
# per chat: this many messages in any CHAT_WINDOW_MS
CHAT_BURST = 3
CHAT_WINDOW_MS = 3_050


class FloodControl:
    """Send slots of one bot, shared through Redis."""

    def __init__(self, redis: Redis, bot_id: int, send_rate: int) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.send_rate = send_rate
        self._reserve = scripts(redis).get("flood.lua")
        self._hold = scripts(redis).get("flood_hold.lua")

    async def reserve(self, chat_id: int | str | None) -> int:
        """Reserve one send to `chat_id`: 0 when reserved, else the ms to wait first."""
        chat_key = keys.chat_sends(self.bot_id, "" if chat_id is None else chat_id)
        with unavailable_on_error():
            wait = await self._reserve(
                keys=[keys.sends(self.bot_id), chat_key, keys.flood_wait(self.bot_id)],
                args=[
                    0, self.send_rate, SEND_WINDOW_MS,  # 0: the script reads Redis's clock
                    CHAT_BURST if chat_id is not None else self.send_rate, CHAT_WINDOW_MS,
                    secrets.token_hex(6),
                ],
            )
        return int(wait)

    async def hold(self, seconds: float) -> None:
        """Telegram said wait `seconds` (a 429): every process holds its sends that long
        (a longer hold already set stays)."""
        with unavailable_on_error():
            await self._hold(
                keys=[keys.flood_wait(self.bot_id)], args=[max(1, int(seconds * 1000))]
            )
