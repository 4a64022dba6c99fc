"""Every Redis operation tglogin does, and the connection that carries them.

Both workers call these coroutines; neither talks to Redis directly. Any
failure to reach Redis surfaces as `Unavailable`, which the API maps to 503
and the bot to "temporarily unavailable". The client reconnects by itself,
so the first operation after Redis returns simply works.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared import keys
from shared.hashing import code_for_update, digest, new_code, new_token, normalize_code
from shared.redis import Unavailable as Unavailable  # re-exported: the layer's, as before
from shared.redis import connect as connect
from shared.redis import load_script as load_script
from shared.redis import ping as redis_ping
from shared.redis import unavailable_on_error as unavailable_on_error
from shared.settings import Settings

logger = logging.getLogger(__name__)

User = dict[str, Any]
USER_FIELDS = ("id", "username", "first_name", "last_name", "language_code")


class InvalidCode(Exception):
    """The code is unknown, expired or already used (indistinguishable on purpose)."""


class RateLimited(Exception):
    """Too many attempts; `retry_after` is whole seconds until the next may succeed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class IssuedCode:
    code: str
    ttl_seconds: int


@dataclass(frozen=True)
class Redemption:
    user: User
    access_token: str
    expires_in: int


def now_ms() -> int:
    return int(time.time() * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


def retry_after(ms: int) -> int:
    """Whole seconds, at least 1, for a wait of `ms` milliseconds (a PTTL or a wait)."""
    return max(1, -(-ms // 1000))


def queue_attempt(pipe: Pipeline, key: str, window_seconds: int) -> None:
    """Queue counting one attempt in a fixed window at `key`: the pipeline answers
    (attempts so far, window started, milliseconds left in the window)."""
    pipe.incr(key)
    pipe.expire(key, window_seconds, nx=True)
    pipe.pttl(key)


def public_user(user: User) -> User:
    """The user as the API shows it: exactly the contract's fields."""
    return {name: user.get(name) for name in USER_FIELDS}


class Store:
    """tglogin's operations on one Redis connection pool."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._issue = redis.register_script(load_script("issue_code.lua"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(connect(settings), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    def hash(self, purpose: str, value: str) -> str:
        """The keyed hash Redis knows `value` by."""
        return digest(self.settings.auth_secret, purpose, value)

    async def ping(self) -> None:
        """Redis answers (every primary of a Cluster) within REDIS_TIMEOUT."""
        await redis_ping(self.redis)

    # -- codes (bot side) -------------------------------------------------

    async def issue_code(self, user: User, update_key: str | None = None) -> IssuedCode | None:
        """Issue a new code for `user`, voiding the previous one.

        With `update_key` (the update asking for it) the code is derived from
        that key, and asking again for the same update gives the same code
        without counting another issue, so a re-handled update re-sends its
        reply rather than a second code. Raises RateLimited when the user asked
        too often; returns None when that update's code was since replaced.
        Two round trips: write the new code and run the per-user script in one
        pipeline, then delete the previous code (or the unused new one).
        """
        settings = self.settings
        uid = int(user["id"])
        if update_key is None:
            code = new_code(settings.code_length)
        else:
            code = code_for_update(settings.auth_secret, update_key, settings.code_length)
        code_hash = self.hash("code", code)
        record = json.dumps({"user": public_user(user)}, separators=(",", ":"))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                # NX: a re-handled update must not lengthen the life of its code
                pipe.set(keys.code(code_hash), record, ex=settings.code_ttl_seconds, nx=True)
                await self._issue(
                    keys=[keys.user_issues(uid), keys.user_code(uid), keys.user_updates(uid)],
                    args=[
                        _now_ms(),
                        settings.issue_window_seconds * 1000,
                        settings.issue_limit,
                        code_hash,
                        settings.code_ttl_seconds * 1000,
                        update_key or "",
                        keys.UPDATES_TTL_SECONDS,
                    ],
                    client=pipe,
                )
                created, (status, value) = await pipe.execute()
            status = int(status)
            async with self.redis.pipeline(transaction=False) as pipe:
                if status == 1:
                    if value and value != code_hash:
                        pipe.delete(keys.code(value))
                    pipe.hincrby(keys.STATS, "codes_issued", 1)
                elif status == 0 or (status == 2 and not value):
                    if created:  # only a code this call wrote; never a live one
                        pipe.delete(keys.code(code_hash))
                    if status == 0:
                        pipe.hincrby(keys.STATS, "codes_issue_limited", 1)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        if status == 0:
            raise RateLimited(retry_after(int(value)))
        if status == 2 and not value:
            return None
        return IssuedCode(code=code, ttl_seconds=settings.code_ttl_seconds)

    # -- redeem (API side) ------------------------------------------------

    async def redeem_code(self, raw_code: str, address: str) -> Redemption:
        """Consume `raw_code` once and issue an access token for its user.

        The consume is one atomic GETDEL: of any number of concurrent redeems
        of a code, in any number of processes, exactly one gets the record.
        Raises RateLimited when `address` has failed too often, InvalidCode
        for anything that is not a live code.
        """
        settings = self.settings
        fails_key = keys.redeem_fails(self.hash("addr", address))
        code = normalize_code(raw_code)
        try:
            # Count the attempt before looking at the code, so a burst of
            # concurrent guesses cannot all pass the check; a good code gives
            # its attempt back below.
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_attempt(pipe, fails_key, settings.redeem_fail_window_seconds)
                attempts, _, ttl = await pipe.execute()
            if int(attempts) > settings.redeem_fail_limit:
                await self.redis.hincrby(keys.STATS, "redeems_rate_limited", 1)
                raise RateLimited(retry_after(int(ttl)))
            record = None
            if code.isascii() and code.isdigit() and len(code) == settings.code_length:
                record = await self.redis.getdel(keys.code(self.hash("code", code)))
            if record is None:
                await self._count_failure()
                raise InvalidCode
            user: User = json.loads(record)["user"]
            async with self.redis.pipeline(transaction=False) as pipe:
                redemption = self.queue_token(pipe, user)
                pipe.hincrby(keys.STATS, "codes_redeemed", 1)
                pipe.decr(fails_key)
                # should the window have ended meanwhile, DECR made a new key: bound it
                pipe.expire(fails_key, settings.redeem_fail_window_seconds, nx=True)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        return redemption

    def queue_token(self, pipe: Pipeline, user: User) -> Redemption:
        """Queue on `pipe` the writes that issue a new access token for `user`.

        The one way tokens come to be (a redeemed code, an approved deep-link
        login), so /v1/me, revoke and /logout treat them all alike. The token
        is live once the caller executes `pipe`.
        """
        ttl = self.settings.token_ttl_seconds
        token = new_token()
        token_hash = self.hash("token", token)
        now = _now_ms()
        expires = now + ttl * 1000
        tokens_key = keys.user_tokens(int(user["id"]))
        pipe.set(
            keys.token(token_hash),
            json.dumps({"user": user, "exp": expires}, separators=(",", ":")),
            ex=ttl,
        )
        pipe.zadd(tokens_key, {token_hash: expires})
        pipe.zremrangebyscore(tokens_key, "-inf", now)
        pipe.expire(tokens_key, ttl)
        return Redemption(user=public_user(user), access_token=token, expires_in=ttl)

    async def _count_failure(self) -> None:
        """Count a failed redeem for the global alarm (its address counted it already)."""
        settings = self.settings
        minute_key = keys.fail_rate(int(time.time()) // 60)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(minute_key)
            pipe.expire(minute_key, keys.FAIL_RATE_TTL_SECONDS, nx=True)
            pipe.hincrby(keys.STATS, "redeems_failed", 1)
            in_minute, _, _ = await pipe.execute()
        if int(in_minute) == settings.redeem_fail_alarm_per_minute + 1:
            # exactly one process sees the threshold crossed, so one alarm a minute
            await self.redis.hincrby(keys.STATS, "redeem_fail_alarms", 1)
            logger.error(
                "ALARM: more than %d failed redeems in the last minute across all "
                "addresses: someone may be guessing codes",
                settings.redeem_fail_alarm_per_minute,
            )

    # -- tokens -----------------------------------------------------------

    async def token_user(self, token: str) -> User | None:
        """The user an access token belongs to, or None if it is not live."""
        try:
            record = await self.redis.get(keys.token(self.hash("token", token)))
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        if record is None:
            return None
        return public_user(json.loads(record)["user"])

    async def revoke_token(self, token: str) -> bool:
        """End one access token; False if it was not live."""
        token_hash = self.hash("token", token)
        try:
            record = await self.redis.getdel(keys.token(token_hash))
            if record is None:
                return False
            uid = int(json.loads(record)["user"]["id"])
            await self.redis.zrem(keys.user_tokens(uid), token_hash)
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        return True

    async def revoke_user(self, user_id: int) -> int:
        """End every access token of a user and void the user's code; how many tokens ended.

        The tokens go before their index entries, so a /logout cut short (a
        crash, Redis lost) leaves the index pointing at them for the next one.
        """
        tokens_key, code_key = keys.user_tokens(user_id), keys.user_code(user_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(tokens_key, _now_ms(), "+inf")
                pipe.get(code_key)
                token_hashes, current = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for token_hash in token_hashes:
                    pipe.delete(keys.token(token_hash))
                if current:
                    pipe.delete(keys.code(current))
                    pipe.delete(code_key)
                if token_hashes:
                    pipe.zrem(tokens_key, *token_hashes)
                results = await pipe.execute()
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        return sum(int(n) for n in results[: len(token_hashes)])

    # -- bot identity and counters ------------------------------------------

    async def publish_bot_username(self, username: str) -> None:
        try:
            await self.redis.set(keys.BOT_USERNAME, username)
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc

    async def counters(self) -> dict[str, int]:
        """Product counters shared by every process (for /metrics)."""
        try:
            raw = await self.redis.hgetall(keys.STATS)
        except RedisError as exc:
            raise Unavailable(str(exc)) from exc
        return {str(name): int(value) for name, value in raw.items()}
