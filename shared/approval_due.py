"""The due set: when the bot's sweep looks at each push approval (`keys.APPROVAL_DUE`).

Creating an approval touches three places that a Cluster keeps on different nodes: the
due set, the approval's record (the user's slot) and the send queue. No one script can
write them all, so creation goes in an order in which every crash point is repaired:

1. `approval_admit.lua` counts the client's budget and, when it admits, writes the due
   member with a *check time* (`check_ms`: seconds from now, at most the lifetime):
   before anything else of the approval exists. It returns only once that is written.
2. `approval_create.lua` writes the record (known user, the user's budgets).
3. The queue entry (`shared.approval_queue`) and the created counter.

The sweep (`sweep`, every bot process every few seconds) claims the members whose time
has come, a batch at a time and batch after batch while they come back full
(`approval_claim.lua`: the claim moves their score on by a lease, so the bots share the
work rather than all reading the same lowest members, and the members of a bot that
dies mid-sweep come back after the lease), and runs `approval_expire.lua` on each, which
answers for every state:

- no record at the check time (the create script refused, or its API process died
  before it): a tombstone takes the record's key, so a create script that arrives even
  later (a node stalled with it in its input) refuses (503) rather than make an
  approval nobody would look at; the member goes;
- pending, and no bot took it to send (the API process died before step 3, or the
  fleet is behind or down): queued again; either way the member waits for the expiry;
- pending past its expiry: marked expired, appending approval.expired in the same
  step (the emission contract), its record's lifetime set to APPROVAL_TTL_SECONDS from
  then (until then it is kept PENDING_KEEP_MS past the expiry, so a late sweep still
  finds it), and the bot edits its message (later, off the sweep's path); the member
  goes;
- settled (decided, undeliverable, expired) or gone: the member goes.

An approval queued twice is sent once: the bot that takes it notes so in the record
(`Approvals.take`), and the other entry finds it taken or sent. A process that dies
anywhere in 1-3 leaves at worst a member to drop or an approval sent at its check time.

Why not one pipeline of all three: the client's budget must refuse before anything is
written (else a client over its budget would still fill the due set and the queue),
and on a Cluster a pipeline's commands reach their nodes in no set order, so a bot
could read the queue entry before the record exists, and a due entry could be lost
while the record is written. Writing each step only after the one before answered
keeps every partial state one the sweep recognises.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared import keys
from shared.approval_queue import is_key_hash, queue_send
from shared.codes import now_ms, unpack_record
from shared.events import queue_wake
from shared.redis import unavailable_on_error
from shared.settings import Settings

logger = logging.getLogger(__name__)

# the sweep first looks at an approval this long after admitting it (or at its expiry,
# when sooner): long enough for the two round trips of its creation, each within
# REDIS_TIMEOUT (`check_ms`)
CHECK_MIN_MS = 10_000
# a pending approval's record outlasts its expiry by this long (approval_create.lua), so
# a sweep that comes late (the bot fleet down, or behind) still finds it, marks it
# expired and appends approval.expired; marking (or a decision) sets its lifetime to
# APPROVAL_TTL_SECONDS from then. A sweep later still finds nothing: no event
PENDING_KEEP_MS = 86_400_000
# members claimed per batch, and batches per round at most (a round goes on while its
# batches come back full): a bot sweeps up to SWEEP_BATCH x SWEEP_BATCHES members a round
SWEEP_BATCH = 100
SWEEP_BATCHES = 20
# a claimed member is the claiming sweeper's for this long at least (`lease_ms`): long
# enough for a batch's three round trips, each within REDIS_TIMEOUT; a sweeper that
# dies with members claimed leaves them to come back after it
LEASE_MIN_MS = 10_000


def lease_ms(settings: Settings) -> int:
    """How long a sweeper's claim on due members holds others off."""
    return max(LEASE_MIN_MS, int(settings.redis_timeout * 1000) * 3 + 1000)


def check_ms(settings: Settings) -> int:
    """How long after admission the sweep first looks at an approval."""
    slowest = int(settings.redis_timeout * 1000) * 2 + 1000
    return min(max(CHECK_MIN_MS, slowest), settings.approval_ttl_seconds * 1000)


def due_member(user_id: int, key_hash: str) -> str:
    return f"{user_id}:{key_hash}"


def _member(member: str) -> tuple[int, str]:
    """A due member's user id and key hash (0 and "" for one that is not ours)."""
    user, _, key_hash = member.partition(":")
    if not user.isdigit() or len(user) > 16 or not is_key_hash(key_hash):
        return 0, ""
    return int(user), key_hash


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


async def claim(
    redis: Redis, claim_script: AsyncScript, limit: int, lease: int
) -> list[tuple[str, int]]:
    """Claim up to `limit` due members for this sweeper (`approval_claim.lua`): each with
    the score it had; their scores move on by `lease` ms, so no other sweeper takes them
    meanwhile, and they come back once it is over should this one die with them."""
    with unavailable_on_error():
        found = cast(list[Any], await claim_script(keys=[keys.APPROVAL_DUE],
                                                   args=[limit, lease]))
    return [(str(found[i]), int(float(found[i + 1]))) for i in range(0, len(found), 2)]


async def sweep(
    redis: Redis, settings: Settings, expire: AsyncScript, claim_script: AsyncScript,
    limit: int = SWEEP_BATCH, batches: int = SWEEP_BATCHES,
) -> list[Expired]:
    """One round of the sweep: batches of due members claimed for this sweeper, one
    after another while a batch comes back full (at most `batches`): queue again what no
    bot took, mark expired what is past its expiry (the one place approval.expired is
    appended), drop what is settled, gone or never created. What turned expired now, for
    the bot to edit its message."""
    expired: list[Expired] = []
    for _ in range(batches):
        claimed = await claim(redis, claim_script, limit, lease_ms(settings))
        expired += await settle(redis, settings, expire, claimed)
        if len(claimed) < limit:
            break
    return expired


async def settle(
    redis: Redis, settings: Settings, expire: AsyncScript, claimed: list[tuple[str, int]]
) -> list[Expired]:
    """Settle claimed members (each with its score before the claim): one pipeline of
    `approval_expire.lua` runs, then the queue entries of approvals no bot took, then
    the members' new scores (their approvals' expiry) or their removal. A crash
    anywhere leaves the members claimed, to come back after the lease."""
    tombstone_ms = 2 * settings.approval_ttl_seconds * 1000
    expired_ms = settings.approval_ttl_seconds * 1000
    found = [(m, score, *_member(m)) for m, score in claimed]
    members = [m for m in found if m[2]]
    settled = [m for m, _, user_id, _ in found if not user_id]  # not ours
    answers: list[list[Any]] = []
    with unavailable_on_error():
        if members:
            when = now_ms()
            async with redis.pipeline(transaction=False) as pipe:
                # approval.expired is appended by the script that marks it (an API
                # client's approval); the users' wakes go in the same pipeline, before
                # the scripts (shared.events)
                woken = dict.fromkeys(user_id for _, _, user_id, _ in members)
                for user_id in woken:
                    queue_wake(pipe, user_id)
                for _, _, user_id, key_hash in members:
                    await expire(
                        keys=[keys.approval(user_id, key_hash), keys.user(user_id),
                              keys.events(user_id)],
                        args=[user_id, when, tombstone_ms, expired_ms], client=pipe,
                    )
                answers = (await pipe.execute())[len(woken):]
        requeue: list[tuple[int, str]] = []
        rescore: dict[str, int] = {}
        for (member, score, user_id, key_hash), answer in zip(members, answers, strict=True):
            if int(answer[0]) == 0 and str(answer[1]) == "pending":
                expiry, handed = int(answer[2]), int(answer[3])
                if not handed and score < expiry:  # its check: no bot took it
                    requeue.append((user_id, key_hash))
                rescore[member] = expiry  # the claim moved it on: back to its expiry
            else:
                settled.append(member)
        if requeue:  # queued before the member waits for the expiry: a crash requeues
            async with redis.pipeline(transaction=False) as pipe:
                for user_id, key_hash in requeue:
                    queue_send(pipe, user_id, key_hash)
                await pipe.execute()
            logger.info("queued %d approvals no bot had taken by their check time",
                        len(requeue))
        if rescore or settled:
            async with redis.pipeline(transaction=False) as pipe:
                if rescore:
                    pipe.zadd(keys.APPROVAL_DUE, cast(Any, rescore), xx=True)
                if settled:
                    pipe.zrem(keys.APPROVAL_DUE, *settled)
                await pipe.execute()
    return [_expired(user_id, key_hash, answer)
            for (_, _, user_id, key_hash), answer in zip(members, answers, strict=True)
            if int(answer[0]) == 1]


def _expired(user_id: int, key_hash: str, answer: list[Any]) -> Expired:
    language = None
    if answer[6]:
        with contextlib.suppress(ValueError):
            language = unpack_record(user_id, str(answer[6])).get("language_code")
    return Expired(
        user_id=user_id, key_hash=key_hash, client_name=str(answer[1]),
        text=str(answer[2]), message_id=int(answer[3]) if answer[3] else None,
        state=str(answer[5]) if int(answer[4]) else None,
        language_code=str(language) if language else None,
    )
