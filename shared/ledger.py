"""The update ledger: every update is handled once, and confirmed only once handled.

An update is known by its bot, its update id and a fingerprint of its content,
so a Bot API that starts its ids again (a restarted sandbox, a week of quiet
on Telegram) or a second bot on the same Redis never looks like a duplicate.
Before handling, an instance claims the update; after, it marks it handled.
A claim counts only while its instance is alive (a heartbeat every few
seconds), so the claims of a process killed with -9 lapse within `ALIVE_MS`
and its updates are handled by whoever receives them next. Handled marks are
kept a day, longer than Telegram keeps an unconfirmed update.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.redis import scripts, unavailable_on_error

# an instance counts as alive this long after its last heartbeat (ms)
ALIVE_MS = 10_000
# how often a live instance says so (s)
HEARTBEAT_SECONDS = 3.0


class Claim(enum.IntEnum):
    """What `UpdateLedger.begin` answers (the update_begin.lua statuses)."""

    MINE = 0
    HANDLED = 1
    BUSY = 2


@dataclass(frozen=True)
class UpdateKey:
    """One update of one bot, as the ledger and the code issue know it."""

    bot_id: int
    update_id: int
    fingerprint: str

    @classmethod
    def of(cls, bot_id: int, update_id: int, content: dict[str, Any]) -> UpdateKey:
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(bot_id, update_id, fingerprint)

    @property
    def field(self) -> str:
        return f"{self.update_id}:{self.fingerprint}"

    def __str__(self) -> str:
        return f"{self.bot_id}:{self.field}"


class UpdateLedger:
    """Claims and handled marks for one bot's updates, on behalf of one instance."""

    def __init__(self, redis: Redis, bot_id: int, instance: str) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.instance = instance
        self._begin = scripts(redis).get("update_begin.lua")
        self._release = scripts(redis).get("update_release.lua")
        self._heartbeat = scripts(redis).get("heartbeat.lua")

    async def heartbeat(self) -> None:
        """Keep this instance's claims valid for ALIVE_MS from now."""
        with unavailable_on_error():
            await self._heartbeat(keys=[keys.live(self.bot_id)], args=[self.instance, ALIVE_MS])

    async def begin(self, key: UpdateKey) -> tuple[Claim, int]:
        """Claim `key` for handling: (MINE, 0), (HANDLED, 0) or (BUSY, ms the owner lives)."""
        with unavailable_on_error():
            state, wait_ms = await self._begin(
                keys=[keys.updates(self.bot_id, key.update_id), keys.live(self.bot_id)],
                # 0: liveness is judged by Redis's clock in the script
                args=[key.field, self.instance, 0, keys.UPDATES_TTL_SECONDS],
            )
        return Claim(int(state)), int(wait_ms)

    async def finish(self, key: UpdateKey) -> None:
        """Mark `key` handled: whoever receives it again only confirms it."""
        bucket = keys.updates(self.bot_id, key.update_id)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(bucket, key.field, "d")
                pipe.expire(bucket, keys.UPDATES_TTL_SECONDS)
                await pipe.execute()

    async def release(self, key: UpdateKey) -> None:
        """Give up the claim on `key` without handling it (it will come again)."""
        with unavailable_on_error():
            await self._release(
                keys=[keys.updates(self.bot_id, key.update_id)],
                args=[key.field, self.instance],
            )
