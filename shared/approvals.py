"""Push approvals: an API client asks a known user to approve one action in the bot.

The id the client gets is `<user id>.<22 characters>`: the user id, and 128 bits keyed
by AUTH_SECRET from a random seed (`approval_id`). The user id in it is no secret from
the client (it named the user) and lets the API find the user's Cluster slot. Redis
holds a keyed hash of the whole id, which names the approval (`keys.approval(user id,
hash)`), and the seed (`i`), so an approval.* event written in Redis can name the
approval and its deliverer, holding AUTH_SECRET, turn the seed into the id its client
knows; a copy of Redis alone gives no id to poll with, and changing the user id in an
id names a record that does not exist. A poll needs the id and the API key of the
client that created it (the record keeps the client's key hash).

The bot knows the approval by that hash: its queue entry and the callback data of its
buttons carry it, never the id. A tap decides only for the approval's own user (the key
is tagged by the tapping user's id, and the script checks the id too), so a forwarded
message tapped by someone else decides nothing.

"Known user": the user's hash (`keys.user`) holds the public record `r` for everyone
who logged in through tglogin (a redeemed code, an approved deep link or OpenID Connect
login) within TOKEN_TTL_SECONDS of their last login or /logout. Others are unknown.

Expiry: an approval past its `e` reads as expired everywhere at once (the poll and the
decision scripts compare with Redis's clock); the bot's sweep (`expire_due`, every bot
process every few seconds, over `APPROVAL_DUE`) is the one step that marks it expired,
the moment approval.expired belongs to, and takes the buttons off its message.

Creation is three round trips: the client's budget, the create script (known user,
the user's budget, the record, in the user's slot), then the queue entry the bot
fleet reads (`APPROVAL_QUEUE`, consumer group `APPROVAL_GROUP`) and its due time.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared import keys
from shared.codes import User, now_ms, public_user, unpack_record
from shared.counters import Counter
from shared.events import queue_wake
from shared.hashing import b64url, digest, keyed, new_id
from shared.limits import RateLimited, retry_after
from shared.logins import MATCH_HIGH, MATCH_LOW, client_id
from shared.redis import scripts, unavailable_on_error
from shared.settings import ApiClient, Settings
from shared.store import queue_attempt

MAX_TEXT = 200
MAX_STATE = 128
# Telegram user ids are positive and below 2^52; the id's user part is their decimal
_ID = re.compile(r"([1-9][0-9]{0,15})\.([A-Za-z0-9_-]{22})")
# the approval's key hash as it travels in queue entries and callback data
_HASH = re.compile(r"[0-9a-f]{32}")

Status = Literal["pending", "approved", "denied", "expired", "undeliverable"]
_STATUSES: dict[str, Status] = {
    "pending": "pending", "approved": "approved", "denied": "denied",
    "expired": "expired", "undeliverable": "undeliverable",
}


class UnknownUser(Exception):
    """The user has not logged in through tglogin (within TOKEN_TTL_SECONDS)."""


class _Created(enum.IntEnum):
    """approval_create.lua's first answer."""

    UNKNOWN_USER = 0
    CREATED = 1
    USER_LIMITED = 2


class _Decided(enum.IntEnum):
    """approval_decide.lua's first answer."""

    GONE = -1
    EXPIRED = -2
    ALREADY = 0
    NOW = 1
    REPEATED = 2


@dataclass(frozen=True)
class CreatedApproval:
    id: str
    expires_in: int
    match_number: int | None


@dataclass(frozen=True)
class ApprovalStatus:
    status: Status
    expires_in: int | None = None  # pending: seconds left
    user: User | None = None  # who decided it (approved, denied)
    state: str | None = None


@dataclass(frozen=True)
class Prompt:
    """What the bot sends for a queued approval."""

    user_id: int
    key_hash: str
    client_name: str
    text: str
    match: int | None
    language_code: str | None


@dataclass(frozen=True)
class Decision:
    """`decided`: this tap decided it (as `status`); `already`: an earlier one did (or
    the bot found it undeliverable); `expired`: too late. `mismatch`: an approval with
    a match number was approved with another number (or none), so it was denied."""

    outcome: Literal["decided", "already", "expired"]
    status: Status
    client_name: str
    mismatch: bool = False
    state: str | None = None


def approval_id(settings: Settings, user_id: int, seed: str) -> str:
    """An approval's id from its user and the seed in its record (`i`); 128 bits."""
    mac = keyed(settings.auth_secret, f"approval-id:{user_id}:{seed}".encode()).digest()
    return f"{user_id}.{b64url(mac[:16])}"


def parse_id(approval_id: str) -> int | None:
    """The user id an approval id carries, or None for anything not shaped like one."""
    found = _ID.fullmatch(approval_id)
    return None if found is None else int(found[1])


def is_key_hash(value: str) -> bool:
    return _HASH.fullmatch(value) is not None


class Approvals:
    """Push approval operations on one Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._create = scripts(redis).get("approval_create.lua")
        self._poll = scripts(redis).get("approval_poll.lua")
        self._decide = scripts(redis).get("approval_decide.lua")
        self._sent = scripts(redis).get("approval_sent.lua")
        self._expire = scripts(redis).get("approval_expire.lua")

    def approval_id(self, user_id: int, seed: str) -> str:
        """The id of the approval whose record holds `seed` (its `i`): the user id, and a
        keyed hash of the seed. Redis holds the seed, so an event can name the approval,
        and whoever delivers the event (with AUTH_SECRET) turns it into the id its client
        knows; a copy of Redis alone gives no id."""
        return approval_id(self.settings, user_id, seed)

    def key_hash(self, approval_id: str) -> str:
        """What the record is named by, the bot's buttons carry, and decisions publish."""
        return digest(self.settings.auth_secret, "approval", approval_id)[:32]

    # -- API side -----------------------------------------------------------------------

    async def create(
        self, client: ApiClient | None, user_id: int, text: str, state: str | None,
        match: bool,
    ) -> CreatedApproval:
        """Queue an approval for the bot to send to `user_id`.

        Raises UnknownUser, RateLimited (the client's budget, the client's budget for the
        user, or the user's budget from all clients together), Unavailable.
        """
        settings = self.settings
        client_hash = client_id(settings, client)
        limit_key = keys.approval_client_count(client_hash or "open")
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_attempt(pipe, limit_key, settings.approval_client_window_seconds)
                asked, _, window_ms = await pipe.execute()
            if int(asked) > settings.approval_client_limit:
                await self._count(Counter.APPROVALS_LIMITED)
                raise RateLimited(retry_after(int(window_ms)))
            seed = new_id()
            approval_id = self.approval_id(user_id, seed)
            key_hash = self.key_hash(approval_id)
            number = (secrets.randbelow(MATCH_HIGH - MATCH_LOW + 1) + MATCH_LOW) if match else None
            ttl = settings.approval_ttl_seconds
            outcome, value = await self._create(
                keys=[
                    keys.user(user_id), keys.approval(user_id, key_hash),
                    keys.approval_user_count(user_id),
                    # this client's count for the user: in the user's slot (the tag)
                    f"{keys.approval_user_count(user_id)}:{client_hash or 'open'}",
                ],
                args=[
                    client_hash, client.name if client is not None else "", text,
                    state or "", 0 if state is None else 1,
                    "" if number is None else str(number), ttl * 1000,
                    settings.approval_user_limit, settings.approval_user_window_seconds,
                    user_id, seed, settings.approval_user_total_limit,
                ],
            )
            created = _Created(int(outcome))
            if created is _Created.UNKNOWN_USER:
                raise UnknownUser
            if created is _Created.USER_LIMITED:
                await self._count(Counter.APPROVALS_LIMITED)
                raise RateLimited(retry_after(int(value)))
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    keys.APPROVAL_QUEUE, {"u": str(user_id), "h": key_hash},
                    maxlen=keys.APPROVAL_QUEUE_MAXLEN, approximate=True,
                )
                pipe.zadd(keys.APPROVAL_DUE, {f"{user_id}:{key_hash}": int(value)})
                pipe.hincrby(keys.stats(), Counter.APPROVALS_CREATED, 1)
                await pipe.execute()
        return CreatedApproval(id=approval_id, expires_in=ttl, match_number=number)

    async def status(self, approval_id: str, client: ApiClient | None) -> ApprovalStatus | None:
        """The approval's status for the client that created it; None when it is unknown,
        gone, or another client's."""
        user_id = parse_id(approval_id)
        if user_id is None:
            return None
        with unavailable_on_error():
            found = await self._poll(
                keys=[keys.approval(user_id, self.key_hash(approval_id))],
                args=[client_id(self.settings, client)],
            )
        status = _STATUSES.get(str(found[0]))
        if status is None:
            return None
        state = str(found[3]) if int(found[2]) else None
        decider = str(found[4])
        return ApprovalStatus(
            status=status,
            expires_in=retry_after(int(found[1])) if status == "pending" else None,
            user=public_user(json.loads(decider)) if decider else None,
            state=state,
        )

    # -- bot side -----------------------------------------------------------------------

    async def prompt(self, user_id: int, key_hash: str) -> Prompt | None:
        """What to send for a queued approval; None when there is nothing to send any
        more (decided, expired, gone, or sent already: its message id is noted)."""
        if not is_key_hash(key_hash):
            return None
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.approval(user_id, key_hash), ["st", "n", "t", "m", "e", "mid"])
                pipe.hget(keys.user(user_id), "r")
                (status, name, text, match, expiry, sent), record = await pipe.execute()
        if status != "pending" or sent is not None or text is None or expiry is None:
            return None
        # this machine's clock: a late send is only a message the tap finds expired
        if int(expiry) <= now_ms():
            return None
        language = None
        if record is not None:
            try:
                language = unpack_record(user_id, str(record)).get("language_code")
            except ValueError:
                language = None
        return Prompt(
            user_id=user_id, key_hash=key_hash, client_name=str(name or ""), text=str(text),
            match=int(match) if match else None,
            language_code=str(language) if language else None,
        )

    async def sent(self, user_id: int, key_hash: str, message_id: int) -> None:
        """Note the message sent for the approval."""
        with unavailable_on_error():
            await self._sent(keys=[keys.approval(user_id, key_hash)], args=[message_id])

    async def undeliverable(self, user_id: int, key_hash: str) -> bool:
        """The bot cannot send it (blocked, no such chat): the client's poll says so at
        once. False when it was decided or gone meanwhile."""
        decided = await self._run_decide(user_id, key_hash, "undeliverable", None, None)
        return decided.outcome == "decided"

    async def decide(
        self, user: User, key_hash: str, approve: bool, pick: int | None = None
    ) -> Decision | None:
        """A tap by `user`: only the first decision counts, and only the approval's own
        user decides. None when there is no such approval of this user's. An approval
        with a match number is approved only with `pick` equal to it; otherwise the
        same step denies it."""
        if not is_key_hash(key_hash):
            return None
        decision = await self._run_decide(
            int(user["id"]), key_hash, "approved" if approve else "denied", user, pick
        )
        return None if decision.outcome == "gone" else Decision(
            outcome=decision.outcome, status=decision.status,
            client_name=decision.client_name, mismatch=decision.mismatch,
            state=decision.state,
        )

    async def expire_due(self, limit: int = 100) -> list[Expired]:
        """Mark the pending approvals whose time is up expired (the one place that does,
        and where approval.expired is appended); forget every due member that is settled
        or gone. What turned expired now, for the bot to edit its message."""
        with unavailable_on_error():
            due = await self.redis.zrangebyscore(
                keys.APPROVAL_DUE, "-inf", now_ms(), start=0, num=limit
            )
            members = [(str(m), *_member(str(m))) for m in due]
            if not members:
                return []
            when = now_ms()
            async with self.redis.pipeline(transaction=False) as pipe:
                # approval.expired is appended by the script that marks it (an API
                # client's approval); the users' wakes go in the same pipeline
                for _, user_id, key_hash in members:
                    await self._expire(
                        keys=[keys.approval(user_id, key_hash), keys.user(user_id),
                              keys.events(user_id)],
                        args=[user_id, when], client=pipe,
                    )
                for user_id in dict.fromkeys(user_id for _, user_id, _ in members):
                    queue_wake(pipe, user_id)
                answers = (await pipe.execute())[: len(members)]
            settled = [m for (m, _, _), a in zip(members, answers, strict=True)
                       if not (int(a[0]) == 0 and str(a[1]) == "pending")]
            if settled:
                await self.redis.zrem(keys.APPROVAL_DUE, *settled)
        expired: list[Expired] = []
        for (_, user_id, key_hash), answer in zip(members, answers, strict=True):
            if int(answer[0]) != 1:
                continue
            language = None
            if answer[6]:
                with contextlib.suppress(ValueError):
                    language = unpack_record(user_id, str(answer[6])).get("language_code")
            expired.append(Expired(
                user_id=user_id, key_hash=key_hash, client_name=str(answer[1]),
                text=str(answer[2]), message_id=int(answer[3]) if answer[3] else None,
                state=str(answer[5]) if int(answer[4]) else None,
                language_code=str(language) if language else None,
            ))
        return expired

    async def _run_decide(
        self, user_id: int, key_hash: str, decision: str, user: User | None, pick: int | None
    ) -> _Outcome:
        args: list[str | int] = [
            decision,
            "" if user is None else json.dumps(public_user(user), separators=(",", ":")),
            "" if user is None else str(user_id),
            "" if pick is None else str(pick),
            keys.LOGIN_DECIDED,
            key_hash,
            self.settings.approval_ttl_seconds * 1000,
            now_ms(),
        ]
        with unavailable_on_error():
            # approval.approved / approval.denied: appended by the script when a tap
            # decides an API client's approval now; undeliverable has no event
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._decide(
                    keys=[keys.approval(user_id, key_hash), keys.events(user_id)],
                    args=args, client=pipe,
                )
                if user is not None:
                    queue_wake(pipe, user_id)
                found, *_ = await pipe.execute()
            outcome = _Decided(int(found[0]))
            status = _STATUSES.get(str(found[1]), "denied")
            if outcome is _Decided.NOW:
                counter = {
                    "approved": Counter.APPROVALS_APPROVED,
                    "denied": Counter.APPROVALS_DENIED,
                }.get(status, Counter.APPROVALS_UNDELIVERABLE)
                await self._count(counter)
        kinds: dict[_Decided, Literal["decided", "already", "expired", "gone"]] = {
            _Decided.NOW: "decided", _Decided.REPEATED: "decided",
            _Decided.ALREADY: "already", _Decided.EXPIRED: "expired", _Decided.GONE: "gone",
        }
        return _Outcome(
            outcome=kinds[outcome], status=status, client_name=str(found[2]),
            mismatch=bool(int(found[3])), state=str(found[5]) if int(found[4]) else None,
        )

    async def _count(self, counter: Counter) -> None:
        await self.redis.hincrby(keys.stats(), counter, 1)


@dataclass(frozen=True)
class Expired:
    """An approval the sweep just marked expired: where its message is, what it said."""

    user_id: int
    key_hash: str
    client_name: str
    text: str
    message_id: int | None  # None: never sent
    state: str | None
    language_code: str | None


def _member(member: str) -> tuple[int, str]:
    """A due member's user id and key hash (0 and "" for one that is not ours)."""
    user, _, key_hash = member.partition(":")
    if not user.isdigit() or len(user) > 16 or not is_key_hash(key_hash):
        return 0, ""
    return int(user), key_hash


@dataclass(frozen=True)
class _Outcome:
    outcome: Literal["decided", "already", "expired", "gone"]
    status: Status
    client_name: str
    mismatch: bool
    state: str | None


# -- the queue the bot fleet sends from -------------------------------------------------

# an entry a consumer has held this long without a word is another's to take (its
# process died, or lost Redis); a live sender says so more often (`ApprovalQueue.touch`)
CLAIM_IDLE_MS = 15_000
# consumers (bot processes) gone this long with nothing pending are forgotten
CONSUMER_FORGET_MS = 3_600_000

Entry = tuple[str, int, str]  # entry id, user id, approval key hash


def _entries(raw: object) -> list[Entry]:
    """(id, user id, key hash) of stream entries as redis-py gives them; malformed
    entries come back with user id 0 (to be acknowledged and dropped)."""
    found: list[Entry] = []
    for item in raw or []:  # type: ignore[attr-defined]
        entry_id, fields = item
        fields = fields or {}
        user, key_hash = str(fields.get("u", "")), str(fields.get("h", ""))
        user_id = int(user) if user.isdigit() and len(user) <= 16 else 0
        found.append((str(entry_id), user_id, key_hash))
    return found


class ApprovalQueue:
    """The approvals waiting to be sent: a stream with one consumer group that every bot
    process reads as a consumer named by its instance. An entry is acknowledged and
    deleted once it is handled; one left pending by a process that died is claimed by
    another after CLAIM_IDLE_MS."""

    def __init__(self, redis: Redis, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's start (approvals queued before any bot
        ran are sent too; stale ones are skipped as expired)."""
        with unavailable_on_error():
            try:
                await self.redis.xgroup_create(
                    keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer, waiting up to `block_ms` for one."""
        with unavailable_on_error():
            try:
                answer = await self.redis.xreadgroup(
                    keys.APPROVAL_GROUP, self.consumer, {keys.APPROVAL_QUEUE: ">"},
                    count=count, block=block_ms,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_group()  # the stream went (a flushed database)
                return []
        if not answer:
            return []
        if isinstance(answer, dict):  # RESP3
            return [e for raw in answer.values() for e in _entries(raw[0] if raw else [])]
        return [e for _, raw in answer for e in _entries(raw)]

    async def claim(self, count: int) -> list[Entry]:
        """Entries other consumers (or this one, after a failed send) left pending past
        CLAIM_IDLE_MS, now this consumer's."""
        with unavailable_on_error():
            try:
                answer = await self.redis.xautoclaim(
                    keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, self.consumer,
                    CLAIM_IDLE_MS, start_id="0-0", count=count,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_group()
                return []
        return _entries(answer[1])

    async def touch(self, entry_id: str) -> None:
        """Still working on it (a slow send): nobody claims it for another CLAIM_IDLE_MS."""
        with unavailable_on_error():
            await self.redis.xclaim(
                keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, self.consumer, 0, [entry_id],
                justid=True,
            )

    async def done(self, entry_id: str) -> None:
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, entry_id)
                pipe.xdel(keys.APPROVAL_QUEUE, entry_id)
                await pipe.execute()

    async def forget_gone_consumers(self) -> int:
        """Remove consumers (processes long gone) that hold nothing; how many."""
        removed = 0
        with unavailable_on_error():
            consumers = await self.redis.xinfo_consumers(
                keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP
            )
            for consumer in consumers:
                name = str(consumer.get("name", ""))
                idle = int(consumer.get("idle", 0))
                if name != self.consumer and not int(consumer.get("pending", 0)) \
                        and idle > CONSUMER_FORGET_MS:
                    await self.redis.xgroup_delconsumer(
                        keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, name
                    )
                    removed += 1
        return removed
