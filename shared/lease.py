"""Leases in Redis: which bot process polls getUpdates, and who sets the webhook.

A lease is a key holding its holder's name with a TTL. The holder renews it
well before it runs out; anyone may take it once it has run out, so a holder
killed with -9 is replaced within one lease length plus one follower's try.
A holder gives its lease back when it stops, so a graceful stop hands over at
once. The holder's name is per process (host, pid, random), never reused.
"""

from __future__ import annotations

import os
import secrets
import socket

from redis.asyncio import Redis

from shared import keys
from shared.redis import scripts, unavailable_on_error

# how long a polling lease lasts unless renewed (ms); the poller renews every third of it
LEASE_MS = 10_000


def instance_name() -> str:
    """A name for this process that no other process, before or after, has."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """The polling lease and the webhook marker of one bot, for one instance."""

    def __init__(self, redis: Redis, bot_id: int, instance: str) -> None:
        self.redis = redis
        self.bot_id = bot_id
        self.instance = instance
        self._take = scripts(redis).get("lease.lua")
        self._release = scripts(redis).get("release.lua")

    async def take_poller(self) -> bool:
        """Take or renew the polling lease; True while this instance holds it."""
        with unavailable_on_error():
            held = await self._take(
                keys=[keys.poller(self.bot_id)], args=[self.instance, LEASE_MS]
            )
        return bool(int(held))

    async def release_poller(self) -> None:
        with unavailable_on_error():
            await self._release(keys=[keys.poller(self.bot_id)], args=[self.instance])

    # -- the webhook, set once by one process --------------------------------

    async def webhook_set(self) -> str | None:
        """The digest of the webhook configuration last set, if any."""
        with unavailable_on_error():
            value = await self.redis.get(keys.webhook(self.bot_id))
        return None if value is None else str(value)

    async def lock_webhook(self, ms: int) -> bool:
        """Take the lock for checking (and setting) the webhook for `ms` milliseconds;
        False if another process has it. Left to expire, it spaces the checks."""
        with unavailable_on_error():
            taken = await self.redis.set(
                keys.webhook_lock(self.bot_id), self.instance, nx=True, px=ms
            )
        return bool(taken)

    async def unlock_webhook(self) -> None:
        """Give the lock back early (a failed check: let the next try come sooner)."""
        with unavailable_on_error():
            await self._release(keys=[keys.webhook_lock(self.bot_id)], args=[self.instance])

    async def mark_webhook(self, digest: str | None) -> None:
        """Record the configuration just set (None: the webhook was deleted, so the next
        webhook process checks at once)."""
        with unavailable_on_error():
            if digest is None:
                await self.redis.delete(keys.webhook(self.bot_id), keys.webhook_lock(self.bot_id))
            else:
                await self.redis.set(keys.webhook(self.bot_id), digest)
