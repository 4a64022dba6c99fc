"""The queue the bot fleet sends push approvals from (`shared.approvals`).

A Redis stream (`keys.APPROVAL_QUEUE`) with one consumer group (`keys.APPROVAL_GROUP`)
that every bot process reads as a consumer named by its instance. An entry names one
approval by its user and key hash, never by its id: `{u user id, h key hash}`. It is
acknowledged and deleted once handled; one left pending by a process that died (or lost
Redis) is claimed by another after CLAIM_IDLE_MS.

Two entries may name one approval: the sweep queues an approval again when no bot took
it by its check time (`shared.approval_due`). What keeps that from sending it twice is
the approval's own note of who is sending it (`Approvals.take`), not the queue.
"""

from __future__ import annotations

import re

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from shared import keys
from shared.redis import unavailable_on_error

# an entry a consumer has held this long without a word is another's to take (its
# process died, or lost Redis); a live sender says so more often (`ApprovalQueue.touch`)
CLAIM_IDLE_MS = 15_000
# consumers (bot processes) gone this long with nothing pending are forgotten
CONSUMER_FORGET_MS = 3_600_000

# the approval's key hash as it travels in queue entries, due members and callback data
_HASH = re.compile(r"[0-9a-f]{32}")

Entry = tuple[str, int, str]  # entry id, user id, approval key hash


def is_key_hash(value: str) -> bool:
    return _HASH.fullmatch(value) is not None


def queue_send(pipe: Pipeline, user_id: int, key_hash: str) -> None:
    """Queue, on `pipe`, the entry that asks the bot fleet to send the approval."""
    pipe.xadd(
        keys.APPROVAL_QUEUE, {"u": str(user_id), "h": key_hash},
        maxlen=keys.APPROVAL_QUEUE_MAXLEN, approximate=True,
    )


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
    """One bot process's consumer of the approval queue."""

    def __init__(self, redis: Redis, consumer: str, claim_idle_ms: int = CLAIM_IDLE_MS) -> None:
        self.redis = redis
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms

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
        `claim_idle_ms`, now this consumer's."""
        with unavailable_on_error():
            try:
                answer = await self.redis.xautoclaim(
                    keys.APPROVAL_QUEUE, keys.APPROVAL_GROUP, self.consumer,
                    self.claim_idle_ms, start_id="0-0", count=count,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_group()
                return []
        return _entries(answer[1])

    async def touch(self, entry_id: str) -> None:
        """Still working on it (a slow send): nobody claims it for another idle time."""
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
