"""Login codes: issued by the bot, redeemed by the API, each in one atomic step.

A code's own key maps its keyed hash to the user it was issued to; the user's
record (`keys.user`, hash-tagged by the user) says which code is current. So:

- issuing makes the new code current in one script on the user's slot: the
  previous code stops redeeming at that instant, never both live;
- redeeming looks the code up (a read), then one script on the user's slot
  consumes it and records the access token made from it; the token itself is
  sealed (`shared.tokens`) and needs no other write, so no crash at any
  instant leaves a consumed code without its token;
- the per-address failure budget (`shared.limits.AttemptBudget`) admits the
  attempt in the same round trip as the lookup and settles it in the same
  round trip as the consume: two sequential round trips for a valid redeem.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from redis.asyncio import Redis

from shared import keys
from shared.counters import Counter
from shared.hashing import code_for_update, digest, new_code, normalize_code
from shared.limits import Attempt, AttemptBudget, RateLimited, retry_after
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings
from shared.tokens import Claims, client_tag, new_token_id, seal

logger = logging.getLogger(__name__)

User = dict[str, Any]
# candidate codes tried when the digits are taken by another user's key
CODE_CANDIDATES = 8
USER_FIELDS = ("id", "username", "first_name", "last_name", "language_code")


class InvalidCode(Exception):
    """The code is unknown, expired or already used (indistinguishable on purpose)."""


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


def public_user(user: User) -> User:
    """The user as the API shows it: exactly the contract's fields."""
    return {name: user.get(name) for name in USER_FIELDS}


def user_record(user: User) -> str:
    return json.dumps(public_user(user), separators=(",", ":"))


def make_token(
    settings: Settings, user_id: int, generation: int, client: ApiClient | None, token_id: str,
    now: int,
) -> str:
    """Seal the access token for a user at `generation`, for `client`."""
    expires = now // 1000 + settings.token_ttl_seconds
    tag = client_tag(settings.auth_secret, client)
    claims = Claims(user_id, expires, generation, token_id, tag)
    return seal(settings.auth_secret, claims)


class Codes:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.budget = AttemptBudget(redis, settings)
        self._issue = scripts(redis).get("issue_code.lua")
        self._consume = scripts(redis).get("code_consume.lua")

    def _hash(self, code: str) -> str:
        return digest(self.settings.auth_secret, "code", code)

    # -- bot side -------------------------------------------------------------------------

    async def issue(self, user: User, update_key: str | None = None) -> IssuedCode | None:
        """A new code for `user`, voiding the previous one at once.

        With `update_key` (the update asking for it) the code is derived from
        that key, and asking again for the same update gives the same code
        without counting another issue, so a re-handled update re-sends its
        reply rather than a second code. Raises RateLimited when the user asked
        too often; returns None when that update's code was since replaced.
        Two round trips to decide (the code's key, then the user's script), one
        more for the counters.
        """
        settings = self.settings
        uid = int(user["id"])
        code, code_hash, created = await self._claim_code(uid, update_key)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._issue(
                    keys=[keys.user(uid), keys.user_issues(uid), keys.user_updates(uid)],
                    args=[
                        now_ms(),
                        settings.issue_window_seconds * 1000,
                        settings.issue_limit,
                        code_hash,
                        settings.code_ttl_seconds * 1000,
                        update_key or "",
                        keys.UPDATES_TTL_SECONDS,
                        user_record(user),
                        settings.token_ttl_seconds,
                    ],
                    client=pipe,
                )
                ((status, value),) = await pipe.execute()
            status = int(status)
            # the counters, off the user's slot (and the refused code's key, inert anyway)
            async with self.redis.pipeline(transaction=False) as pipe:
                if status == 1:
                    pipe.hincrby(keys.STATS, Counter.CODES_ISSUED, 1)
                elif status == 0:
                    if created:  # never another's key, nor one a re-handled update made
                        pipe.delete(keys.code(code_hash))
                    pipe.hincrby(keys.STATS, Counter.CODES_ISSUE_LIMITED, 1)
                await pipe.execute()
        if status == 0:
            raise RateLimited(retry_after(int(value)))
        if status == 2 and not value:
            return None
        return IssuedCode(code=code, ttl_seconds=settings.code_ttl_seconds)

    async def _claim_code(self, uid: int, update_key: str | None) -> tuple[str, str, bool]:
        """A code whose key is this user's: (code, its hash, whether this call made the
        key). A code's key is never overwritten: two live codes with the same digits
        would let one user's code log in as the other. So a code whose digits another
        user's key still holds (live, or replaced and inert until it expires) is passed
        over for the next candidate; an update's candidates are derived from it in
        order, so handling it again finds the same code (its own key) again."""
        settings = self.settings
        for attempt in range(CODE_CANDIDATES):
            if update_key is None:
                code = new_code(settings.code_length)
            else:
                seed = update_key if attempt == 0 else f"{update_key}#{attempt}"
                code = code_for_update(settings.auth_secret, seed, settings.code_length)
            code_hash = self._hash(code)
            with unavailable_on_error():
                owner = await self.redis.set(
                    keys.code(code_hash), uid, ex=settings.code_ttl_seconds, nx=True, get=True
                )
            if owner is None or int(owner) == uid:
                return code, code_hash, owner is None
        # 10^L codes and only a few thousand live: never in practice
        raise Unavailable(f"no free code after {CODE_CANDIDATES} candidates")

    # -- API side -------------------------------------------------------------------------

    async def redeem(
        self, raw_code: str, address: str, client: ApiClient | None = None
    ) -> Redemption:
        """Consume `raw_code` once and seal an access token for its user and `client`.

        Raises RateLimited when `address` has failed too often, InvalidCode for
        anything that is not a live code. Of any number of concurrent redeems of
        one code, in any number of processes, exactly one succeeds: the consume
        is one script on the user's slot.
        """
        settings = self.settings
        code = normalize_code(raw_code)
        well_formed = code.isascii() and code.isdigit() and len(code) == settings.code_length
        code_hash = self._hash(code) if well_formed else ""
        attempt = self.budget.attempt(address)
        now = now_ms()
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.budget.queue_admit(pipe, attempt, now)
                if well_formed:
                    pipe.get(keys.code(code_hash))
                found = await pipe.execute()
        admission = (int(found[0][0]), int(found[0][1]))
        owner = found[1] if well_formed else None
        if admission[0] != 0:
            if admission[0] == 1:
                await self._count(Counter.REDEEMS_RATE_LIMITED)
            await self.budget.wait_for_room(attempt, admission, now)
            if well_formed:  # admitted after a wait: look again, the code may be gone
                with unavailable_on_error():
                    owner = await self.redis.get(keys.code(code_hash))
        if owner is None:
            await self._fail(attempt)
        uid = int(owner)
        token_id = new_token_id()
        now = now_ms()
        expires_ms = now + settings.token_ttl_seconds * 1000
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._consume(
                    keys=[keys.user(uid), keys.user_tokens(uid)],
                    args=[code_hash, now, token_id, expires_ms, settings.token_ttl_seconds],
                    client=pipe,
                )
                await self.budget.queue_settle(pipe, attempt, failed=False)
                pipe.hincrby(keys.STATS, Counter.CODES_REDEEMED, 1)
                consumed, _, _ = await pipe.execute()
        if int(consumed[0]) != 1:
            with unavailable_on_error():
                await self.redis.hincrby(keys.STATS, Counter.CODES_REDEEMED, -1)
            await self._fail(attempt)
        user: User = json.loads(consumed[1])
        token = make_token(settings, uid, int(consumed[2]), client, token_id, now)
        return Redemption(user=public_user(user), access_token=token,
                          expires_in=settings.token_ttl_seconds)

    async def _fail(self, attempt: Attempt) -> NoReturn:
        """Spend one of the address's failures, count it for the alarm; InvalidCode."""
        await self.budget.settle(attempt, failed=True)
        await self.count_failure(Counter.REDEEMS_FAILED)
        raise InvalidCode

    async def _count(self, counter: Counter) -> None:
        with unavailable_on_error():
            await self.redis.hincrby(keys.STATS, counter, 1)

    async def count_failure(self, counter: Counter) -> None:
        """Count a failure (a wrong code, a wrong API key) in `counter` and for the
        global alarm (its address counted it already)."""
        settings = self.settings
        minute_key = keys.fail_rate(int(time.time()) // 60)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(minute_key)
                pipe.expire(minute_key, keys.FAIL_RATE_TTL_SECONDS, nx=True)
                pipe.hincrby(keys.STATS, counter, 1)
                in_minute, _, _ = await pipe.execute()
            if int(in_minute) == settings.redeem_fail_alarm_per_minute + 1:
                # exactly one process sees the threshold crossed, so one alarm a minute
                await self.redis.hincrby(keys.STATS, Counter.REDEEM_FAIL_ALARMS, 1)
                logger.error(
                    "ALARM: more than %d failed redeems and wrong API keys in the last "
                    "minute across all addresses: someone may be guessing",
                    settings.redeem_fail_alarm_per_minute,
                )
