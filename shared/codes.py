"""Login codes: issued by the bot, redeemed by the API, each in one atomic step.

A code is one Redis key and nothing else (`keys.code`): named by a short keyed hash
of its digits, holding whose it is, until when it redeems, which update asked for it
and the user's record, in one string (about 160 bytes of Redis per code). A user's
codes need no record of their own, because they are found from the user id: the
codes of one issue window are its slots 0, 1, ... (`shared.hashing.slot_code`), so
the issuer reads the user's slots of this window and the last (one round trip) and
then, in one pipeline, voids the live one and writes the next slot (the second):

- a new code voids the previous one before the reply carrying it is sent, so a user
  holds one live code (two issues for one user at the same instant that fall on
  either side of a window's end may both stand: both codes are that user's);
- the filled slots of the window are the issues counted against the limit (a slot
  another user's code happens to hold counts as used: one in 10^L / live codes);
- an update's mark in its code lets the same update, handled again, re-send that code
  (or nothing, once it was replaced or redeemed) instead of issuing another.

Redeeming is one script on a single server or Sentinel's master (code_redeem.lua, one
round trip): it admits the address's attempt (`shared.limits.AttemptBudget`), turns the
code from live to redeemed, once, lists the access token on the user's hash checking
the session generation the code was issued at (`shared.tokens`: a /logout since then
ends the code as well as the tokens) and settles the attempt. That script makes the
user's keys from the user id in the code, which a Cluster refuses (they live in other
slots), so a Cluster redeems in two round trips of the same pieces: the admission with
the code's lookup, then the consume, the listing and the settle in one pipeline. So
does a process whose server refused the script for its keys (`refuses_keys`: a node in
cluster mode named without REDIS_CLUSTER=1, a server that wants every key declared),
and an address whose room is held by its attempts in flight (the two steps wait for it);
an address over its limit is refused at once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from redis.asyncio import Redis
from redis.exceptions import ClusterCrossSlotError, ResponseError

from shared import keys
from shared.counters import Counter
from shared.hashing import normalize_code, short_digest, slot_code
from shared.limits import Attempt, AttemptBudget, RateLimited, retry_after
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings, code_windows
from shared.tokens import Claims, client_tag, field_tail, new_token_id, seal

logger = logging.getLogger(__name__)

User = dict[str, Any]
USER_FIELDS = ("id", "username", "first_name", "last_name", "language_code")
# a code's states (the first character of its value)
LIVE, REDEEMED, VOID = "L", "S", "R"
# issues that lose their slot to a concurrent one (the same user tapping twice) try again
ISSUE_TRIES = 8
# code_redeem.lua's answers (their first item)
TOKEN_MADE, OVER_LIMIT, NO_ROOM, NOT_LIVE, LOGGED_OUT = range(5)


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


@dataclass(frozen=True)
class StoredCode:
    """A code's value, read back."""

    state: str
    user_id: int
    expires_ms: int
    update_mark: str
    generation: int
    record: str

    @classmethod
    def parse(cls, value: str) -> StoredCode | None:
        try:
            user_id, expires, mark, generation, record = value[1:].split("|", 4)
            return cls(value[0], int(user_id), int(expires), mark, int(generation), record)
        except ValueError:
            return None

    def live(self, now: int) -> bool:
        return self.state == LIVE and self.expires_ms > now


class Slot(NamedTuple):
    """One slot of a user's codes, as Redis has it."""

    window: int
    code: str
    key: str
    mine: StoredCode | None  # the code stored there, if it is the user's
    taken: bool  # a key is there (the user's, or another user's with the same digits)


def refuses_keys(error: ResponseError) -> bool:
    """Whether a server refused a script for the keys it touches: keys in more than one
    slot (a node in cluster mode), or keys the script did not declare (a cluster node,
    a server that wants every key declared). Both come before the script's first write
    (code_redeem.lua reads those keys first)."""
    if isinstance(error, ClusterCrossSlotError):
        return True
    text = str(error).lower()
    return "non local key" in text or "undeclared" in text or "crossslot" in text


def now_ms() -> int:
    return int(time.time() * 1000)


def public_user(user: User) -> User:
    """The user as the API shows it: exactly the contract's fields."""
    return {name: user.get(name) for name in USER_FIELDS}


def pack_record(user: User) -> str:
    """The user's public fields but the id, as Redis keeps them: a JSON array."""
    return json.dumps([user.get(name) for name in USER_FIELDS[1:]], separators=(",", ":"))


def unpack_record(user_id: int, record: str) -> User:
    fields = json.loads(record)
    if not isinstance(fields, list) or len(fields) != len(USER_FIELDS) - 1:
        raise ValueError("not a user record")
    return dict(zip(USER_FIELDS, [user_id, *fields], strict=True))


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
        self._consume = scripts(redis).get("code_consume.lua")
        self._void = scripts(redis).get("code_void.lua")
        self._register = scripts(redis).get("token_register.lua")
        # the redeem in one step, where the user's keys may be made by the script
        self._redeem = None if settings.redis_cluster else scripts(redis).get("code_redeem.lua")

    def _hash(self, code: str) -> str:
        return short_digest(self.settings.auth_secret, "code", code)

    # -- a user's slots ---------------------------------------------------------------------

    def _window_ms(self) -> int:
        return self.settings.issue_window_seconds * 1000

    def _lifetime_ms(self) -> int:
        """How long a code's key lives: while it redeems, and while it counts toward
        the issue limit."""
        return max(self.settings.code_ttl_seconds, self.settings.issue_window_seconds) * 1000

    async def _read_slots(self, uid: int, now: int) -> tuple[list[Slot], int]:
        """Every slot that may hold a live code of the user (this issue window's and
        those before it as far back as a code's key lives) as Redis has it, and the
        user's session generation."""
        settings = self.settings
        window = now // self._window_ms()
        windows = code_windows(settings.code_ttl_seconds, settings.issue_window_seconds)
        codes = [
            (w, slot_code(settings.auth_secret, uid, w, slot, settings.code_length))
            for w in range(window, window - windows, -1)
            for slot in range(settings.issue_limit)
        ]
        code_keys = [keys.code(self._hash(code)) for _, code in codes]
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in code_keys:
                    pipe.get(key)
                pipe.hget(keys.user(uid), "g")
                *values, generation = await pipe.execute()
        read = []
        for (w, code), key, value in zip(codes, code_keys, values, strict=True):
            stored = StoredCode.parse(value) if value is not None else None
            if stored is not None and stored.user_id != uid:
                stored = None
            read.append(Slot(w, code, key, stored, value is not None))
        return read, int(generation or 0)

    # -- bot side -------------------------------------------------------------------------

    async def issue(self, user: User, update_key: str | None = None) -> IssuedCode | None:
        """A new code for `user`, voiding the previous one.

        With `update_key` (the update asking for it), asking again for the same update
        gives the same code without counting another issue, so a re-handled update
        re-sends its reply rather than a second code; it returns None when that code
        was since replaced or redeemed. Raises RateLimited when the user asked too
        often. Two round trips: the user's slots, then the void and the write.
        """
        settings = self.settings
        uid = int(user["id"])
        mark = short_digest(settings.auth_secret, "update", update_key, 8) if update_key else "-"
        for _ in range(ISSUE_TRIES):
            now = now_ms()
            read, generation = await self._read_slots(uid, now)
            if update_key is not None:
                for slot in read:
                    if slot.mine is not None and slot.mine.update_mark == mark:
                        if slot.mine.live(now):
                            return IssuedCode(code=slot.code,
                                              ttl_seconds=settings.code_ttl_seconds)
                        return None
            ttl_ms, window_ms = settings.code_ttl_seconds * 1000, self._window_ms()
            # issues in the last window (a sliding one), by when each was made
            issued = sorted(slot.mine.expires_ms - ttl_ms for slot in read if slot.mine is not None
                            and slot.mine.expires_ms - ttl_ms > now - window_ms)
            free = [slot for slot in read if slot.window == now // window_ms and not slot.taken]
            if len(issued) >= settings.issue_limit or not free:
                with unavailable_on_error():
                    await self.redis.hincrby(keys.stats(), Counter.CODES_ISSUE_LIMITED, 1)
                if len(issued) >= settings.issue_limit:
                    wait = issued[-settings.issue_limit] + window_ms - now
                else:  # the slots left in this window hold other users' codes
                    wait = (now // window_ms + 1) * window_ms - now
                raise RateLimited(retry_after(wait))
            new = free[0]
            value = (f"{LIVE}{uid}|{now + settings.code_ttl_seconds * 1000}|{mark}|"
                     f"{generation}|{pack_record(user)}")
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    for slot in read:
                        if slot.mine is not None and slot.mine.live(now):
                            await self._void(keys=[slot.key], args=[uid], client=pipe)
                    pipe.set(new.key, value, px=self._lifetime_ms(), nx=True)
                    pipe.hincrby(keys.stats(), Counter.CODES_ISSUED, 1)
                    pipe.hget(keys.user(uid), "g")
                    *_, written, _, now_generation = await pipe.execute()
            if written and int(now_generation or 0) == generation:
                return IssuedCode(code=new.code, ttl_seconds=settings.code_ttl_seconds)
            # the slot was taken since it was read (the same user asking twice at once), or
            # a /logout came between the two steps: the code would never redeem (its
            # tokens' generation is over), so it is voided and the issue begins again
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    if written:
                        await self._void(keys=[new.key], args=[uid], client=pipe)
                    pipe.hincrby(keys.stats(), Counter.CODES_ISSUED, -1)
                    await pipe.execute()
        raise Unavailable(f"no free slot after {ISSUE_TRIES} tries")

    async def void_all(self, uid: int) -> None:
        """Void every live code of a user (`/logout`)."""
        now = now_ms()
        read, _ = await self._read_slots(uid, now)
        live = [slot.key for slot in read if slot.mine is not None and slot.mine.live(now)]
        if not live:
            return
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in live:
                    await self._void(keys=[key], args=[uid], client=pipe)
                await pipe.execute()

    # -- API side -------------------------------------------------------------------------

    async def redeem(
        self, raw_code: str, address: str, client: ApiClient | None = None
    ) -> Redemption:
        """Consume `raw_code` once and seal an access token for its user and `client`.

        Raises RateLimited when `address` has failed too often, InvalidCode for
        anything that is not a live code. Of any number of concurrent redeems of
        one code, in any number of processes, exactly one succeeds: the consume
        is one script on the code's key.
        """
        settings = self.settings
        code = normalize_code(raw_code)
        if self._redeem is not None and self._well_formed(code):
            redemption = await self._redeem_in_one_step(code, address, client)
            if redemption is not None:
                return redemption
        attempt, code_key, stored, now = await self._find(code, address)
        uid = stored.user_id
        token_id = new_token_id()
        expires = now // 1000 + settings.token_ttl_seconds
        user_key = keys.user(uid)
        register_keys = [user_key]
        register_args: list[str | int] = [
            token_id, expires, now // 1000, settings.token_ttl_seconds, stored.record,
            stored.generation, field_tail(address, client=client.name if client else ""),
        ]
        if client is not None:
            # code.redeemed, appended by token_register.lua when the token counts; an open
            # API has no one to tell and runs exactly as before
            from shared.events import event_args  # shared.events imports this module

            register_keys.append(keys.events(uid))
            register_args += event_args("code.redeemed", client.name, {
                "user": unpack_record(uid, stored.record), "session": token_id,
            }, now)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                if client is not None:  # the wake before the script (shared.events)
                    from shared.events import queue_wake

                    queue_wake(pipe, uid)
                await self._consume(keys=[code_key], args=[now, uid], client=pipe)
                await self._register(keys=register_keys, args=register_args, client=pipe)
                await self.budget.queue_settle(pipe, attempt, failed=False)
                pipe.hincrby(keys.stats(), Counter.CODES_REDEEMED, 1)
                answers = await pipe.execute()
                if client is not None:
                    answers = answers[1:]
                consumed, (listed, _, *event), *_ = answers
        if not consumed or not int(listed):
            # another redeem of the same code won, or a /logout since the code was issued
            # ended it (the token would be sealed at a generation that no longer counts);
            # a losing redeem's code.redeemed is taken back with its token (a deliverer
            # woken in the milliseconds between may have sent it: it names a session
            # that never counted)
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hdel(user_key, token_id)
                    if event:
                        pipe.xdel(keys.events(uid), str(event[0]))
                    pipe.hincrby(keys.stats(), Counter.CODES_REDEEMED, -1)
                    await pipe.execute()
            await self._lost(attempt, consumed)
        return self._redemption(stored, client, token_id, now)

    async def _redeem_in_one_step(
        self, code: str, address: str, client: ApiClient | None
    ) -> Redemption | None:
        """`redeem` as one script (code_redeem.lua); None when the address was not
        admitted at once (nothing was done: the two steps admit it, waiting for room)."""
        settings = self.settings
        attempt = self.budget.attempt(address)
        now = now_ms()
        token_id = new_token_id()
        script_keys = [*attempt.keys, keys.code(self._hash(code)), keys.stats()]
        args = [
            *self.budget.in_one_step(attempt, now), keys.before_user_id(keys.USER), token_id,
            settings.token_ttl_seconds, field_tail(address, client=client.name if client else ""),
            Counter.CODES_REDEEMED,
        ]
        if client is not None:  # code.redeemed for the client, and its deliverer's wake
            script_keys.append(keys.EVENT_WAKE)
            args += [keys.before_user_id(keys.EVENTS), client.name]
        script = self._redeem
        assert script is not None
        with unavailable_on_error():
            try:
                answer = await script(keys=script_keys, args=args)
            except ResponseError as exc:
                if not refuses_keys(exc):
                    raise
                # it refused before writing anything: this process redeems in two steps
                # from now on, as on a Cluster
                if self._redeem is not None:
                    self._redeem = None
                    logger.warning(
                        "Redis refused the one-step redeem for its keys (%s): redeems take "
                        "two round trips from now on; with a Redis Cluster, set "
                        "REDIS_CLUSTER=1", exc)
                return None
        status = int(answer[0])
        if status == OVER_LIMIT:  # nothing done: no use trying again now
            await self._count(Counter.REDEEMS_RATE_LIMITED)
            raise RateLimited(retry_after(int(answer[1])))
        if status == NO_ROOM:  # attempts in flight hold the room: the two steps wait for it
            return None
        if status == NOT_LIVE:  # a failure spent already
            await self.count_failure(Counter.REDEEMS_FAILED)
            raise InvalidCode
        stored = StoredCode.parse(answer[1]) if status == TOKEN_MADE else None
        if stored is None:  # LOGGED_OUT: the code is spent, its token never counted
            raise InvalidCode
        return self._redemption(stored, client, token_id, now)

    def _redemption(
        self, stored: StoredCode, client: ApiClient | None, token_id: str, now: int
    ) -> Redemption:
        """What a redeem of `stored` answers: its user and the token sealed for `client`."""
        uid = stored.user_id
        token = make_token(self.settings, uid, stored.generation, client, token_id, now)
        return Redemption(user=unpack_record(uid, stored.record), access_token=token,
                          expires_in=self.settings.token_ttl_seconds)

    def _well_formed(self, code: str) -> bool:
        return code.isascii() and code.isdigit() and len(code) == self.settings.code_length

    async def take(self, raw_code: str, address: str) -> tuple[User, int]:
        """Consume `raw_code` once, as `redeem` does, without making an access token: its
        user and the session generation the code was issued at (the OpenID Connect
        authorization page turns them into an authorization code). The same
        per-address budget and errors as `redeem`."""
        attempt, code_key, stored, now = await self._find(normalize_code(raw_code), address)
        uid = stored.user_id
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._consume(keys=[code_key], args=[now, uid], client=pipe)
                pipe.hget(keys.user(uid), "g")
                await self.budget.queue_settle(pipe, attempt, failed=False)
                pipe.hincrby(keys.stats(), Counter.CODES_REDEEMED, 1)
                consumed, generation, _, _ = await pipe.execute()
        if not consumed or int(generation or 0) != stored.generation:
            await self._count(Counter.CODES_REDEEMED, -1)
            await self._lost(attempt, consumed)
        return unpack_record(uid, stored.record), stored.generation

    async def _find(self, code: str, address: str) -> tuple[Attempt, str, StoredCode, int]:
        """Admit an attempt from `address` and read `code` (normalized): the attempt, the
        code's key, what it holds and the time (ms). RateLimited, or InvalidCode (a
        failure spent) when it is not a live code."""
        well_formed = self._well_formed(code)
        code_key = keys.code(self._hash(code)) if well_formed else ""
        attempt = self.budget.attempt(address)
        now = now_ms()
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.budget.queue_admit(pipe, attempt, now)
                if well_formed:
                    pipe.get(code_key)
                found = await pipe.execute()
        admission = (int(found[0][0]), int(found[0][1]))
        value = found[1] if well_formed else None
        if admission[0] != 0:
            if admission[0] == 1:
                await self._count(Counter.REDEEMS_RATE_LIMITED)
            await self.budget.wait_for_room(attempt, admission, now)
            if well_formed:  # admitted after a wait: look again, the code may be gone
                with unavailable_on_error():
                    value = await self.redis.get(code_key)
        now = now_ms()
        stored = StoredCode.parse(value) if value is not None else None
        if stored is None or not stored.live(now):
            await self._fail(attempt)
        return attempt, code_key, stored, now

    async def _lost(self, attempt: Attempt, consumed: object) -> NoReturn:
        """InvalidCode after the consume: another redeem won (a failure is spent), or the
        user's own /logout since the issue ended the code (no guess: nothing spent)."""
        if consumed:
            raise InvalidCode
        await self._fail(attempt)

    async def _fail(self, attempt: Attempt) -> NoReturn:
        """Spend one of the address's failures, count it for the alarm; InvalidCode."""
        await self.budget.settle(attempt, failed=True)
        await self.count_failure(Counter.REDEEMS_FAILED)
        raise InvalidCode

    async def _count(self, counter: Counter, by: int = 1) -> None:
        with unavailable_on_error():
            await self.redis.hincrby(keys.stats(), counter, by)

    async def count_failure(self, counter: Counter) -> None:
        """Count a failure (a wrong code, a wrong API key) in `counter` and for the
        global alarm (its address counted it already)."""
        settings = self.settings
        minute_key = keys.fail_rate(int(time.time()) // 60)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(minute_key)
                pipe.expire(minute_key, keys.FAIL_RATE_TTL_SECONDS, nx=True)
                pipe.hincrby(keys.stats(), counter, 1)
                in_minute, _, _ = await pipe.execute()
            if int(in_minute) == settings.redeem_fail_alarm_per_minute + 1:
                # exactly one process sees the threshold crossed, so one alarm a minute
                await self.redis.hincrby(keys.stats(), Counter.REDEEM_FAIL_ALARMS, 1)
                logger.error(
                    "ALARM: more than %d failed redeems and wrong API keys in the last "
                    "minute across all addresses: someone may be guessing",
                    settings.redeem_fail_alarm_per_minute,
                )
