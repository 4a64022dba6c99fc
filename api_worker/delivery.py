"""Delivering events: a task in every API process (started in the app's lifespan) that
reads the wakes and hands each user to `api_worker.user_delivery`.

Rules of this module:
- Wakes (`shared.events.queue_wake`) are read with XREADGROUP from the consumer group
  `keys.EVENT_GROUP` on a connection of their own (a blocking read never joins the
  data client's batches). A wake is acknowledged and deleted (XACK, XDEL) once its user
  was handled, or noted due because another process holds the user: the wake stream is
  never trimmed and holds only wakes not yet handled. A process killed meanwhile leaves
  its wake pending, and another process claims it (XAUTOCLAIM) after
  EVENT_CLAIM_IDLE_SECONDS and delivers again: at least once.
- A user locked by another process, or whose first waiting event is due later, is
  noted in `keys.EVENT_DUE` (the earliest time wins) and looked at again then. A due
  user is not taken off the set when a pass starts but leased (re-scored to its lock's
  end, `event_due.lua`): one whose pass fails or is killed is due again by itself.
- A wake naming a login request's event stream (`l`, `keys.login_events`) hands it on:
  its events are moved into the user's stream before the user's own are delivered (and
  noted for the holder when another process holds the user).
- A wake is queued before the script that appends its event (`shared.events`), so it may
  be read before that script ran: a wake younger than `shared.events.grace_ms` leaves a
  note with its time (its entry id's ms) that every pass of its user keeps until the
  grace ends, the user due then (`api_worker.user_delivery`).
- A backstop: every SWEEP_EVERY seconds one API process (the one that takes the
  sweep's lease) looks through every user's event stream and every login request's
  event stream and notes each user found due (a login stream for its user too), so an
  event whose wake was lost (on a Cluster: a wake re-sent after its event's node was
  written, a failover that lost an unreplicated wake) goes out within that time,
  never only with the user's next wake.
- Redis failures are logged and waited out; the task never dies of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from api_worker.user_delivery import UserDelivery
from shared import keys
from shared.codes import now_ms
from shared.events import entry_ms, is_login_events, note_member
from shared.hashing import random_hex
from shared.redis import Unavailable, connect, unavailable_on_error
from shared.settings import Settings
from shared.waiting import wait_set

logger = logging.getLogger(__name__)

# users one process delivers to at once
CONCURRENCY = 32
# the due users are looked at when the first is due, when this process notes one, and
# at least this often (s): what another process noted and left behind is found then
DUE_AT_MOST = 5.0
# how long the due users just started may take to lease their users (s)
DUE_SETTLE = 0.5
# wakes read or claimed at a time
BATCH = 16
# pause after a Redis failure, doubling up to the most (s)
RETRY_FIRST, RETRY_MAX = 0.1, 2.0
# how often one process looks through every event stream for users no wake names (s)
SWEEP_EVERY = 300.0
# keys a SCAN step asks for, and users noted due in one step
SWEEP_COUNT = 1000


class Deliverer:
    """The event delivery of one API process."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        # blocking reads on a client (and so connections) of their own
        self._reader = connect(settings, batched=False)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{random_hex(4)}"
        self._due_noted = asyncio.Event()
        self.users = UserDelivery(settings, redis, self._due_noted.set)
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._claimed = "0-0"  # where XAUTOCLAIM goes on from
        # a blocking read waits at most half of REDIS_TIMEOUT (its deadline), up to 5 s:
        # an idle process costs Redis a few commands a second at most
        self._block_ms = max(50, min(5000, int(settings.redis_timeout * 500)))

    def start(self) -> None:
        for name, loop in (
            ("event wakes", self._read_wakes), ("event claims", self._claim_wakes),
            ("event retries", self._due_users), ("event sweep", self._sweep_after),
        ):
            self._loops.append(asyncio.create_task(self._forever(name, loop), name=name))

    async def close(self) -> None:
        """Stop: what is in flight is left pending, for another process to deliver."""
        tasks = [*self._loops, *self._running]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.users.aclose()
        with contextlib.suppress(Exception):
            await self._reader.aclose()

    # -- the loops ----------------------------------------------------------------------

    async def _forever(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        delay = RETRY_FIRST
        failing = False
        while True:
            try:
                await step()
            except (Unavailable, ResponseError, OSError) as exc:
                if "NOGROUP" in str(exc):  # no wake yet, or a flushed Redis: the group
                    with contextlib.suppress(Unavailable):
                        if not await self._make_group():
                            await asyncio.sleep(self._block_ms / 1000)
                        continue
                if not failing:
                    logger.warning("%s: Redis failed (%s); trying again", name, exc)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception:  # never let delivery die
                logger.exception("%s: unexpected error; going on", name)
                await asyncio.sleep(RETRY_MAX)
                continue
            if failing:
                logger.info("%s: Redis answers again", name)
                failing = False
            delay = RETRY_FIRST

    async def _make_group(self) -> bool:
        """Make the consumer group, from the stream's start; False while there is no
        stream (no event yet: nothing is written to Redis before the first)."""
        try:
            with unavailable_on_error():
                await self.redis.xgroup_create(keys.EVENT_WAKE, keys.EVENT_GROUP, "0")
        except Unavailable as exc:
            if "BUSYGROUP" in str(exc):
                return True
            if "requires the key to exist" in str(exc):
                return False
            raise
        return True

    async def _read_wakes(self) -> None:
        with unavailable_on_error():
            found: Any = await self._reader.xreadgroup(
                keys.EVENT_GROUP, self._consumer, {keys.EVENT_WAKE: ">"},
                count=BATCH, block=self._block_ms,
            )
        for _, entries in found or ():  # [[stream, [(id, fields), ...]]]
            await self._handle_wakes(entries)

    async def _claim_wakes(self) -> None:
        """Take over wakes another process (or this one) left pending too long."""
        await asyncio.sleep(max(0.25, self.settings.event_claim_idle_seconds / 2))
        idle_ms = int(self.settings.event_claim_idle_seconds * 1000)
        with unavailable_on_error():
            answer = await self.redis.xautoclaim(
                keys.EVENT_WAKE, keys.EVENT_GROUP, self._consumer, idle_ms, self._claimed,
                count=BATCH,
            )
        # where the next look goes on from ("0-0" once the whole list was seen)
        self._claimed = str(answer[0])
        entries = [entry for entry in answer[1] if entry and entry[1]]
        if entries:
            logger.info("claimed %d pending event wake(s)", len(entries))
            await self._handle_wakes(entries)

    async def _due_users(self) -> None:
        self._due_noted.clear()  # before the read: a note after it ends the wait below
        with unavailable_on_error():
            first: Any = await self.redis.zrange(keys.EVENT_DUE, 0, 0, withscores=True)
        wait = DUE_AT_MOST
        if first:
            wait = min(wait, (float(first[0][1]) - now_ms()) / 1000)
        if wait > 0:
            await wait_set(self._due_noted, wait)
            return
        with unavailable_on_error():
            due: Any = await self.redis.zrangebyscore(
                keys.EVENT_DUE, "-inf", now_ms(), 0, BATCH
            )
        spawned = [await self._spawn(self._deliver_logged(int(user))) for user in due]
        if spawned:  # let them lease their users (re-scored) before it is read again
            await asyncio.wait(spawned, timeout=DUE_SETTLE)

    async def _sweep_after(self) -> None:
        await asyncio.sleep(SWEEP_EVERY)
        await self.sweep()

    async def sweep(self) -> int:
        """If no other process swept within SWEEP_EVERY, note due every user with an
        event stream, and every user a login request's event stream names (with a note
        of that stream, as its wake would); how many users were noted (0: another
        process's turn)."""
        lease_ms = int(SWEEP_EVERY * 1000) - 1000
        with unavailable_on_error():
            if not await self.redis.set(keys.EVENT_SWEEP, self._consumer, nx=True,
                                        px=max(lease_ms, 1000)):
                return 0
        users: set[int] = set()
        notes: list[tuple[int, str]] = []
        with unavailable_on_error():
            async for key in self.redis.scan_iter(
                match=keys.EVENTS + "{u*", count=SWEEP_COUNT, _type="STREAM"
            ):
                user = keys.events_user(str(key))
                if user is not None:
                    users.add(user)
            async for key in self.redis.scan_iter(
                match=keys.LOGIN_EVENTS + "*", count=SWEEP_COUNT, _type="STREAM"
            ):
                head: Any = await self.redis.xrange(str(key), count=1)
                for _, fields in head:
                    user_field = str((fields or {}).get("u", ""))
                    if user_field.isdigit():
                        notes.append((int(user_field), str(key)))
                        users.add(int(user_field))
            for user, stream in notes:  # as old notes: moved, or dropped if empty
                await self.redis.sadd(keys.event_logins(user), note_member(stream, 0))
            found = sorted(users)
            for first in range(0, len(found), SWEEP_COUNT):
                # NX: a user already due keeps its time (a lease, a retry's schedule)
                await self.redis.zadd(keys.EVENT_DUE, {
                    str(user): now_ms() for user in found[first:first + SWEEP_COUNT]
                }, nx=True)
        if found:
            logger.info("event sweep: %d user(s) with events noted due", len(found))
            self._due_noted.set()
        return len(found)

    async def _handle_wakes(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            await self._spawn(self._wake(
                str(entry_id), str(fields.get("u", "")), str(fields.get("l", ""))
            ))

    async def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        try:
            await self._slots.acquire()
        except BaseException:  # stopped while waiting for a slot: the work never starts
            work.close()
            raise
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._running.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._running.discard(finished)
            self._slots.release()

        task.add_done_callback(done)
        return task

    async def _wake(self, entry_id: str, user: str, login: str = "") -> None:
        try:
            if user.isdigit():
                await self.users.deliver(
                    int(user), login if is_login_events(login) else None, entry_ms(entry_id)
                )
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(keys.EVENT_WAKE, keys.EVENT_GROUP, entry_id)
                    pipe.xdel(keys.EVENT_WAKE, entry_id)
                    await pipe.execute()
        except Unavailable as exc:  # left pending: claimed and handled again later
            logger.warning("event delivery for a user stopped (%s); it will be retried", exc)
        except Exception:
            logger.exception("unexpected error delivering events; the wake is left pending")

    async def _deliver_logged(self, user_id: int) -> None:
        try:
            await self.deliver(user_id)
        except Unavailable as exc:
            logger.warning("event delivery for a user stopped (%s); it will be retried", exc)
        except Exception:
            logger.exception("unexpected error delivering events")

    async def deliver(self, user_id: int, login_stream: str | None = None) -> bool:
        """Deliver what of `user_id`'s events can go now (`UserDelivery.deliver`); False
        when another process holds the user."""
        return await self.users.deliver(user_id, login_stream)
