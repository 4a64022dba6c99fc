"""The operations both workers call, on one Redis client, by resource.

`Store` holds the client (`shared.redis.connect`) and the settings, and hands
each call to the module that owns the resource: codes (`shared.codes`),
sessions and tokens (`shared.sessions`), the per-address limits
(`shared.limits`); deep-link logins have their own `shared.logins.Logins`.
Neither worker talks to Redis directly. Any failure to reach Redis surfaces
as `Unavailable`, which the API maps to 503 and the bot to "temporarily
unavailable"; the client reconnects by itself.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared import keys
from shared.codes import (
    USER_FIELDS as USER_FIELDS,
)
from shared.codes import (
    Codes,
    IssuedCode,
    Redemption,
    User,
)
from shared.codes import (
    InvalidCode as InvalidCode,
)
from shared.codes import (
    now_ms as now_ms,
)
from shared.codes import (
    public_user as public_user,
)
from shared.hashing import digest
from shared.limits import RateLimited as RateLimited
from shared.limits import retry_after as retry_after
from shared.redis import Unavailable as Unavailable  # re-exported: the layer's, as before
from shared.redis import connect as connect
from shared.redis import load_script as load_script
from shared.redis import ping as redis_ping
from shared.redis import unavailable_on_error as unavailable_on_error
from shared.sessions import Sessions
from shared.settings import ApiClient, Settings

logger = logging.getLogger(__name__)

__all__ = [
    "USER_FIELDS", "InvalidCode", "IssuedCode", "RateLimited", "Redemption", "Store",
    "Unavailable", "User", "connect", "load_script", "now_ms", "public_user",
    "queue_attempt", "retry_after", "unavailable_on_error",
]


def queue_attempt(pipe: Pipeline, key: str, window_seconds: int) -> None:
    """Queue counting one attempt in a fixed window at `key`: the pipeline answers
    (attempts so far, window started, milliseconds left in the window)."""
    pipe.incr(key)
    pipe.expire(key, window_seconds, nx=True)
    pipe.pttl(key)


class Store:
    """tglogin's operations on one Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.codes = Codes(redis, settings)
        self.sessions = Sessions(redis, settings, self.codes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(connect(settings), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    def hash(self, purpose: str, value: str) -> str:
        """The keyed hash Redis knows `value` by."""
        return digest(self.settings.auth_secret, purpose, value)

    async def ping(self) -> None:
        await redis_ping(self.redis)

    async def warn_if_evicting(self) -> None:
        """Log a warning when Redis may evict keys under memory pressure: tglogin's
        guarantees rest on every key living its TTL (an evicted revocation lets a token
        count again; an evicted code lets the same slot give its digits again). Quiet
        when Redis will not say (CONFIG disabled, as on some managed services)."""
        try:
            with unavailable_on_error():
                found = await self.redis.config_get("maxmemory-policy")
        except Unavailable:
            return
        policy = str(found.get("maxmemory-policy", "noeviction"))
        if policy != "noeviction":
            logger.warning(
                "Redis may evict keys (maxmemory-policy %s): a revoked token could count "
                "again and a user's code repeat an earlier one; set maxmemory-policy "
                "noeviction", policy,
            )

    # -- codes and tokens (see shared.codes and shared.sessions) ------------------------

    async def issue_code(self, user: User, update_key: str | None = None) -> IssuedCode | None:
        return await self.codes.issue(user, update_key)

    async def redeem_code(
        self, raw_code: str, address: str, client: ApiClient | None = None
    ) -> Redemption:
        return await self.codes.redeem(raw_code, address, client)

    async def token_user(self, token: str, client: ApiClient | None = None) -> User | None:
        return await self.sessions.user_for(token, client)

    async def revoke_token(self, token: str, client: ApiClient | None = None) -> bool:
        return await self.sessions.revoke(token, client)

    async def revoke_user(self, user_id: int) -> int:
        """`/logout`: end every access token of a user and void the user's code."""
        return await self.sessions.logout(user_id)

    # -- bot identity and counters -------------------------------------------------------

    async def publish_bot_username(self, username: str) -> None:
        with unavailable_on_error():
            await self.redis.set(keys.BOT_USERNAME, username)

    async def counters(self) -> dict[str, int]:
        """Product counters shared by every process (for /metrics)."""
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys.all_stats():
                    pipe.hgetall(key)
                shards = await pipe.execute()
        totals: dict[str, int] = {}
        for shard in shards:
            for name, value in shard.items():
                totals[str(name)] = totals.get(str(name), 0) + int(value)
        return totals
