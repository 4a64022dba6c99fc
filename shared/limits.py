"""Per-address budgets: failures spend them, nothing else does.

`AttemptBudget` guards the redeem: an attempt is admitted only while the
address's failures plus its attempts in flight are under the limit, and is
settled as a success (no cost) or a failure (one spent). So however many
guesses one address sends at once, no more than the limit are tried per
window; a burst of valid redeems is at worst held back for a moment while
earlier ones settle, never refused; and a refused attempt spends nothing and
does not extend the window, which starts with the first failure. The address
is the canonical `shared.addresses.limit_subject` (an IPv6 /64 is one).

`FailureCounter` is the plain form for wrong API keys and the OpenID Connect
token and revocation endpoints' refusals (each under its own keys): each one
counts, and at the limit the address gets 429 until the window ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared import keys
from shared.addresses import limit_subject
from shared.hashing import digest, random_hex
from shared.redis import scripts, unavailable_on_error
from shared.settings import Settings

# how long an attempt waits for room held by attempts in flight before it is refused
# (s), and how often it looks again meanwhile
ROOM_WAIT, ROOM_POLL = 2.0, 0.01


class RateLimited(Exception):
    """Too many attempts; `retry_after` is whole seconds until the next may succeed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


def retry_after(ms: int) -> int:
    """Whole seconds, at least 1, for a wait of `ms` milliseconds (a PTTL or a wait)."""
    return max(1, -(-ms // 1000))


def address_hash(settings: Settings, address: str) -> str:
    """The keyed hash Redis knows a client address's budget by (never the address)."""
    subject = limit_subject(address, settings.ipv6_limit_prefix)
    return digest(settings.auth_secret, "addr", subject)[:32]


@dataclass(frozen=True)
class Attempt:
    failures_key: str
    pending_key: str
    id: str

    @property
    def keys(self) -> list[str]:
        return [self.failures_key, self.pending_key]


class AttemptBudget:
    """The redeem's failure budget of each address."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._admit = scripts(redis).get("attempt_admit.lua")
        self._settle = scripts(redis).get("attempt_settle.lua")

    def attempt(self, address: str) -> Attempt:
        hashed = address_hash(self.settings, address)
        return Attempt(
            keys.redeem_fails(hashed), keys.redeem_pending(hashed), random_hex(6)
        )

    def _admit_args(self, attempt: Attempt, now: int) -> list[str | int]:
        return [now, self.settings.redeem_fail_limit, attempt.id, keys.ATTEMPT_IN_FLIGHT_MS]

    def in_one_step(self, attempt: Attempt, now: int) -> list[str | int]:
        """The ARGV a script that admits and settles `attempt` itself (lib_attempt.lua)
        begins with: admit's, then the failure window (ms)."""
        return [*self._admit_args(attempt, now), self.settings.redeem_fail_window_seconds * 1000]

    def _settle_args(self, attempt: Attempt, failed: bool) -> list[str | int]:
        return [attempt.id, 1 if failed else 0, self.settings.redeem_fail_window_seconds * 1000]

    async def admit(self, attempt: Attempt, now: int) -> tuple[int, int]:
        """One try at admission: (0, 0) admitted, (1, ms) over the limit, (2, 0) no room
        yet (attempts in flight may free it)."""
        with unavailable_on_error():
            status, wait = await self._admit(
                keys=attempt.keys, args=self._admit_args(attempt, now)
            )
        return int(status), int(wait)

    async def queue_admit(self, pipe: Pipeline, attempt: Attempt, now: int) -> None:
        """Queue `admit` on `pipe` (it answers [status, ms] there)."""
        await self._admit(keys=attempt.keys, args=self._admit_args(attempt, now), client=pipe)

    async def wait_for_room(self, attempt: Attempt, first: tuple[int, int], now: int) -> None:
        """Given the first admission answer, admit `attempt` or raise RateLimited."""
        status, wait = first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROOM_WAIT
        while status == 2 and loop.time() < deadline:
            await asyncio.sleep(ROOM_POLL)  # attempts in flight settle within milliseconds
            now += int(ROOM_POLL * 1000)
            status, wait = await self.admit(attempt, now)
        if status == 1:
            raise RateLimited(retry_after(wait))
        if status == 2:
            raise RateLimited(1)

    async def settle(self, attempt: Attempt, failed: bool) -> int:
        """Settle an admitted attempt; the failures in the window now."""
        with unavailable_on_error():
            return int(
                await self._settle(keys=attempt.keys, args=self._settle_args(attempt, failed))
            )

    async def queue_settle(self, pipe: Pipeline, attempt: Attempt, failed: bool) -> None:
        """Queue `settle` on `pipe`."""
        await self._settle(
            keys=attempt.keys, args=self._settle_args(attempt, failed), client=pipe
        )


class FailureCounter:
    """Failures per address in a fixed window that starts with the first one, counted
    under `key(address hash)` (default: the wrong API keys')."""

    def __init__(
        self, redis: Redis, settings: Settings, limit: int, window: int,
        key: Callable[[str], str] = keys.key_fails,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.limit = limit
        self.window = window
        self._key_of = key

    def _key(self, address: str) -> str:
        return self._key_of(address_hash(self.settings, address))

    async def check(self, address: str) -> None:
        """RateLimited when `address` is at the limit (checking spends nothing)."""
        key = self._key(address)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                count, ttl = await pipe.execute()
        if count is not None and int(count) >= self.limit:
            raise RateLimited(retry_after(int(ttl)))

    async def fail(self, address: str) -> int:
        """Count one failure; how many in the window now."""
        key = self._key(address)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window, nx=True)
                count, _ = await pipe.execute()
        return int(count)
