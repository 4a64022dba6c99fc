"""The bot's side of a push approval (`shared.approvals`): taking it to send, noting the
message, the decisions (a tap, an undeliverable send) and the sweep.

`Approvals` (the API's side, creating and reading) is this class and more, so a bot
process and the API share one object and one set of scripts. Every operation here runs
on the approval's own key (the user's Cluster slot), the user's event stream beside it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from shared import keys
from shared.approval_due import SWEEP_BATCH, Expired, claim, lease_ms, sweep
from shared.approval_queue import CLAIM_IDLE_MS, is_key_hash
from shared.codes import User, now_ms, public_user, unpack_record
from shared.counters import Counter
from shared.events import queue_wake
from shared.redis import scripts, unavailable_on_error
from shared.settings import Settings

# a bot's note that it is sending an approval holds others off this long; it renews
# the note as often as it touches its queue entry (the same lease as the entry's)
SEND_LEASE_MS = CLAIM_IDLE_MS

Status = Literal["pending", "approved", "denied", "expired", "undeliverable"]
STATUSES: dict[str, Status] = {
    "pending": "pending", "approved": "approved", "denied": "denied",
    "expired": "expired", "undeliverable": "undeliverable",
}


class _Decided(enum.IntEnum):
    """approval_decide.lua's first answer."""

    GONE = -1
    EXPIRED = -2
    ALREADY = 0
    NOW = 1
    REPEATED = 2


class _Take(enum.IntEnum):
    """approval_sending.lua's first answer."""

    NOTHING = 0
    SEND = 1
    BUSY = 2


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
class Taken:
    """`send`: this entry's to send (`prompt`; `again`: an earlier attempt may have
    reached Telegram); `busy`: another entry's send is under way, try later; `nothing`:
    sent, settled, expired or gone."""

    outcome: Literal["send", "busy", "nothing"]
    prompt: Prompt | None = None
    again: bool = False


@dataclass(frozen=True)
class Decision:
    """`decided`: this tap decided it (as `status`); `already`: an earlier one did (or
    the bot found it undeliverable); `expired`: too late. `mismatch`: an approval with
    a match number was approved with another number (or none), so it was denied.
    `message_id`: the message the bot noted sending (None: none noted)."""

    outcome: Literal["decided", "already", "expired"]
    status: Status
    client_name: str
    mismatch: bool = False
    state: str | None = None
    message_id: int | None = None


class ApprovalDecisions:
    """What a bot process does to approvals, on one Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._decide = scripts(redis).get("approval_decide.lua")
        self._sending = scripts(redis).get("approval_sending.lua")
        self._sent = scripts(redis).get("approval_sent.lua")
        self._expire = scripts(redis).get("approval_expire.lua")
        self._claim = scripts(redis).get("approval_claim.lua")

    async def take(self, user_id: int, key_hash: str, entry_id: str) -> Taken:
        """Take the approval a queue entry names to send it, noted in its record before
        anything goes to Telegram (`approval_sending.lua`); run again for the same entry
        while the send lasts, it renews the note."""
        if not is_key_hash(key_hash):
            return Taken("nothing")
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._sending(keys=[keys.approval(user_id, key_hash)],
                                    args=[entry_id, SEND_LEASE_MS], client=pipe)
                pipe.hget(keys.user(user_id), "r")
                found, record = await pipe.execute()
        taken = _Take(int(found[0]))
        if taken is not _Take.SEND:
            return Taken("nothing" if taken is _Take.NOTHING else "busy")
        language = None
        if record is not None:
            try:
                language = unpack_record(user_id, str(record)).get("language_code")
            except ValueError:
                language = None
        prompt = Prompt(
            user_id=user_id, key_hash=key_hash, client_name=str(found[2]),
            text=str(found[3]), match=int(found[4]) if found[4] else None,
            language_code=str(language) if language else None,
        )
        return Taken("send", prompt, again=bool(int(found[1])))

    async def sent(self, user_id: int, key_hash: str, message_id: int) -> None:
        """Note the message sent for the approval."""
        with unavailable_on_error():
            await self._sent(keys=[keys.approval(user_id, key_hash)], args=[message_id])

    async def undeliverable(self, user_id: int, key_hash: str) -> bool:
        """The bot cannot send it (blocked, no such chat): the client's poll says so at
        once. False when it was decided or gone meanwhile."""
        decided = await self._run_decide(user_id, key_hash, "undeliverable", None, None)
        return decided is not None and decided.outcome == "decided"

    async def decide(
        self, user: User, key_hash: str, approve: bool, pick: int | None = None
    ) -> Decision | None:
        """A tap by `user`: only the first decision counts, and only the approval's own
        user decides. None when there is no such approval of this user's. An approval
        with a match number is approved only with `pick` equal to it; otherwise the
        same step denies it."""
        if not is_key_hash(key_hash):
            return None
        return await self._run_decide(
            int(user["id"]), key_hash, "approved" if approve else "denied", user, pick
        )

    async def expire_due(self, limit: int = SWEEP_BATCH) -> list[Expired]:
        """One round of the sweep (`shared.approval_due.sweep`): claim due members batch
        after batch, queue again what no bot took by its check time, mark expired what
        is past its expiry, forget the rest when settled."""
        return await sweep(self.redis, self.settings, self._expire, self._claim, limit)

    async def claim_due(self, limit: int = SWEEP_BATCH) -> list[tuple[str, int]]:
        """Only the sweep's first step: claim up to `limit` due members for a lease (and
        do nothing more with them, as a sweeper that dies then)."""
        return await claim(self.redis, self._claim, limit, lease_ms(self.settings))

    async def _run_decide(
        self, user_id: int, key_hash: str, decision: str, user: User | None, pick: int | None
    ) -> Decision | None:
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
                if user is not None:
                    queue_wake(pipe, user_id)  # before the script (shared.events)
                await self._decide(
                    keys=[keys.approval(user_id, key_hash), keys.events(user_id)],
                    args=args, client=pipe,
                )
                *_, found = await pipe.execute()
            outcome = _Decided(int(found[0]))
            if outcome is _Decided.GONE:
                return None
            status = STATUSES.get(str(found[1]), "denied")
            if outcome is _Decided.NOW:
                counter = {
                    "approved": Counter.APPROVALS_APPROVED,
                    "denied": Counter.APPROVALS_DENIED,
                }.get(status, Counter.APPROVALS_UNDELIVERABLE)
                await self._count(counter)
        kinds: dict[_Decided, Literal["decided", "already", "expired"]] = {
            _Decided.NOW: "decided", _Decided.REPEATED: "decided",
            _Decided.ALREADY: "already", _Decided.EXPIRED: "expired",
        }
        return Decision(
            outcome=kinds[outcome], status=status, client_name=str(found[2]),
            mismatch=bool(int(found[3])), state=str(found[5]) if int(found[4]) else None,
            message_id=int(found[6]) if len(found) > 6 and found[6] else None,
        )

    async def _count(self, counter: Counter) -> None:
        await self.redis.hincrby(keys.stats(), counter, 1)
