"""Delivering events: a task in every API process (started in the app's lifespan).

Rules of this module:
- Wakes (`shared.events.queue_wake`) are read with XREADGROUP from the consumer group
  `keys.EVENT_GROUP` on a connection of their own (a blocking read never joins the
  data client's batches). A wake is acknowledged once its user was handled; a process
  killed meanwhile leaves it pending, and another process claims it (XAUTOCLAIM) after
  EVENT_CLAIM_IDLE_SECONDS and delivers again: at least once.
- One process delivers a user's events at a time (`keys.event_lock`, SET NX PX), the
  oldest first; a failing head holds back that user's later events (a `session.ended`
  never arrives before its `login.approved`). A user locked by another process, or
  whose head waits for its retry, is noted in `keys.EVENT_DUE` and looked at again.
- Each event goes to its client's pull stream (`keys.event_client`, read by GET
  /v1/events, woken through `keys.LOGIN_DECIDED`) and is POSTed, signed per Standard
  Webhooks, to each of its client's endpoints that wants its type. Once every target
  has it, it leaves the user's stream. A non-2xx, a timeout or no connection is
  retried after EVENT_RETRY_SCHEDULE's waits with the same `webhook-id` while within
  EVENT_RETRY_SECONDS of the first attempt; then it goes to `keys.EVENT_DEAD`.
- An attempt has one deadline, EVENT_TIMEOUT_SECONDS, for all of it (connecting, sending,
  the answer's status and body): a receiver trickling its answer fails the attempt. Of
  the answer's body at most BODY_CAP bytes are read, the rest is never read (the
  connection is closed): a huge answer costs no memory, and its status counts.
- The user's lock outlasts an attempt (EVENT_TIMEOUT_SECONDS and a margin) and is
  extended, only while this process still holds it, before each head and each attempt;
  a process that finds it lost stops for that user (noting it in `keys.EVENT_DUE`):
  two processes never deliver one user's events at once.
- A wake naming a login request's event stream (`l`, `keys.login_events`: a login
  decision's event, appended in the request's slot) has that stream's entries moved
  into the user's stream under the user's lock, before the user's own events are
  delivered (`shared.events.move_login_events`: the user's events newer than it go
  after it again), each with `eid`, its stable id, which is then its `webhook-id` and
  the `w` of its pull stream entry: a move repeated after a process died halfway is
  the same event twice, never two. While another process holds
  the user, such a wake is tried again a few times, then left pending (claimed later).
- Redis failures are logged and waited out; the task never dies of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from standardwebhooks import Webhook

from shared import keys
from shared.codes import now_ms
from shared.counters import Counter
from shared.events import (
    client_data,
    client_hash,
    event_id,
    is_login_events,
    move_login_events,
    parse_fields,
    webhook_body,
)
from shared.hashing import random_hex
from shared.redis import Unavailable, connect, scripts, unavailable_on_error
from shared.settings import EventWebhook, Settings

logger = logging.getLogger(__name__)

# users one process delivers to at once
CONCURRENCY = 32
# the due users are looked at when the first is due, when this process notes one, and
# at least this often (s): what another process noted and left behind is found then
DUE_AT_MOST = 5.0
# a user another process is delivering to is looked at again after this (ms)
BUSY_AGAIN_MS = 1000
# a wake naming a login stream whose user another process holds: tries, and the pause
# between them (s), before it is left pending for a claim
LOGIN_WAKE_TRIES, LOGIN_WAKE_PAUSE = 5, 0.2
# how long the due users just started may take to be taken off the set (s)
DUE_SETTLE = 0.5
# wakes read or claimed at a time
BATCH = 16
# pause after a Redis failure, doubling up to the most (s)
RETRY_FIRST, RETRY_MAX = 0.1, 2.0
# of a webhook's answer, the body bytes read at most (the rest is never read)
BODY_CAP = 4096
# how much longer than one attempt's deadline the user's lock lasts (ms): room for the
# Redis commands between two extensions
LOCK_MARGIN_MS = 5000


class Deliverer:
    """The event delivery of one API process."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        # blocking reads on a client (and so connections) of their own
        self._reader = connect(settings, batched=False)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{random_hex(4)}"
        self._http = httpx.AsyncClient(
            timeout=settings.event_timeout_seconds, follow_redirects=False
        )
        self._signers = {
            secret: Webhook(secret.reveal())
            for hook in settings.event_webhooks for secret in hook.secrets
        }
        # the pull streams of the API_KEYS clients (or of "" when the API is open)
        names = [client.name for client in settings.api_keys] or [""]
        self._pull = {name: client_hash(settings.auth_secret, name) for name in names}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._claimed = "0-0"  # where XAUTOCLAIM goes on from
        # one attempt (its whole deadline) with room to spare, extended before each head
        # and each attempt; a dead process's lock expires
        self._lock_ms = int(settings.event_timeout_seconds * 1000) + LOCK_MARGIN_MS
        self._extend = scripts(redis).get("lock_extend.lua")
        # a blocking read waits at most half of REDIS_TIMEOUT (its deadline), up to 5 s:
        # an idle process costs Redis a few commands a second at most
        self._block_ms = max(50, min(5000, int(settings.redis_timeout * 500)))
        self._due_noted = asyncio.Event()

    def start(self) -> None:
        for name, loop in (
            ("event wakes", self._read_wakes), ("event claims", self._claim_wakes),
            ("event retries", self._due_users),
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
        await self._http.aclose()
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due_noted.wait(), wait)
            return
        with unavailable_on_error():
            due: Any = await self.redis.zrangebyscore(
                keys.EVENT_DUE, "-inf", now_ms(), 0, BATCH
            )
        spawned = [await self._spawn(self._deliver_logged(int(user))) for user in due]
        if spawned:  # let them take their users off the set before it is read again
            await asyncio.wait(spawned, timeout=DUE_SETTLE)

    async def _handle_wakes(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            await self._spawn(self._wake(
                str(entry_id), str(fields.get("u", "")), str(fields.get("l", ""))
            ))

    async def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        await self._slots.acquire()
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
                if is_login_events(login):
                    for _ in range(LOGIN_WAKE_TRIES):
                        if await self.deliver(int(user), login):
                            break
                        await asyncio.sleep(LOGIN_WAKE_PAUSE)
                    else:  # not moved: left pending, claimed and handled again later
                        return
                else:
                    await self.deliver(int(user))
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

    # -- one user -------------------------------------------------------------------------

    async def deliver(self, user_id: int, login_stream: str | None = None) -> bool:
        """Deliver `user_id`'s events in order until none is left or the head must wait,
        after moving those of `login_stream` (a login request's) into the user's stream.
        False when another process holds the user (then nothing was moved)."""
        lock, token = keys.event_lock(user_id), random_hex(8)
        with unavailable_on_error():
            if not await self.redis.set(lock, token, nx=True, px=self._lock_ms):
                # another process is at it: look again shortly, lest it had just finished
                await self.redis.zadd(keys.EVENT_DUE, {str(user_id): now_ms() + BUSY_AGAIN_MS})
                self._due_noted.set()
                return False
        try:
            with unavailable_on_error():
                # taken: whatever was noted for this user is now this process's to do
                await self.redis.zrem(keys.EVENT_DUE, str(user_id))
            if login_stream is not None:  # put before the user's events newer than it
                await move_login_events(self.redis, user_id, login_stream)
            while await self._deliver_head(user_id, lock, token):
                pass
        finally:
            with contextlib.suppress(Unavailable), unavailable_on_error():
                await scripts(self.redis).get("release.lua")(keys=[lock], args=[token])
        return True

    async def _still_held(self, user_id: int, lock: str, token: str) -> bool:
        """Extend the user's lock if this process still holds it; if not (it lapsed, and
        another process may have the user now), note the user to be looked at again and
        say False: this process stops for that user."""
        with unavailable_on_error():
            if await self._extend(keys=[lock], args=[token, self._lock_ms]):
                return True
            await self.redis.zadd(keys.EVENT_DUE, {str(user_id): now_ms() + BUSY_AGAIN_MS})
        self._due_noted.set()
        logger.warning("event delivery for a user stopped: its lock was lost")
        return False

    async def _deliver_head(self, user_id: int, lock: str, token: str) -> bool:
        """Try the user's oldest event; True when it is done with (delivered or dead).
        False when it must wait, or when this process no longer holds the user."""
        if not await self._still_held(user_id, lock, token):
            return False
        stream, retry = keys.events(user_id), keys.event_retry(user_id)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(stream, "-", "+", count=1)
                pipe.hgetall(retry)
                head, state = await pipe.execute()
        if not head:
            return False
        entry_id, fields = head[0]
        entry_id = str(entry_id)
        type_, client, data, ms = parse_fields(fields)
        # a moved login event's id is the one it had before the move (`eid`)
        evt = str(fields.get("eid") or event_id(user_id, entry_id))
        data = client_data(self.settings, user_id, type_, data)
        if state.get("e") != entry_id:
            state = {}
        now = now_ms()
        if state and int(state.get("due", 0)) > now:
            with unavailable_on_error():
                await self.redis.zadd(keys.EVENT_DUE, {str(user_id): int(state["due"])})
            self._due_noted.set()
            return False
        if "p" not in state:
            await self._to_pull_stream(evt, entry_id, type_, client, data, ms, retry)
        done = set(json.loads(state.get("ok", "[]")))
        failed: list[str] = []
        body = webhook_body(type_, ms, data)
        for hook in self.settings.event_webhooks:
            if hook.client != client or not hook.wants(type_) or hook.url in done:
                continue
            if not await self._still_held(user_id, lock, token):
                return False  # what went out is sent again, same webhook-id, by the holder
            if await self._post(hook, evt, body):
                done.add(hook.url)
            else:
                failed.append(hook.url)
        if not failed:
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xdel(stream, entry_id)
                    pipe.delete(retry)
                    await pipe.execute()
            return True
        return await self._after_failure(
            user_id, entry_id, fields, state, done, failed, now
        )

    async def _to_pull_stream(
        self, evt: str, entry_id: str, type_: str, client: str, data: str, ms: int,
        retry: str,
    ) -> None:
        chash = self._pull.get(client)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                if chash is not None:
                    pipe.xadd(
                        keys.event_client(chash),
                        {"t": type_, "d": data, "ts": str(ms), "w": evt},
                        maxlen=keys.EVENT_LOG_MAXLEN, approximate=True,
                    )
                pipe.hset(retry, mapping={"e": entry_id, "p": "1"})
                pipe.expire(retry, self.settings.event_retry_seconds + 86400)
                await pipe.execute()
            if chash is not None:  # a Cluster pipeline takes no PUBLISH
                await self.redis.publish(keys.LOGIN_DECIDED, "evc:" + chash)

    async def _after_failure(
        self, user_id: int, entry_id: str, fields: dict[Any, Any], state: dict[str, str],
        done: set[str], failed: list[str], now: int,
    ) -> bool:
        """Schedule the next attempt (False: the head waits) or give the event up (True)."""
        settings = self.settings
        attempts = int(state.get("n", 0)) + 1
        first = int(state.get("f", now))
        schedule = settings.event_retry_schedule
        due = now + int(schedule[attempts - 1] * 1000) if attempts <= len(schedule) else None
        evt = str(fields.get("eid") or event_id(user_id, entry_id))
        hosts = ",".join(sorted({urlsplit(url).hostname or "?" for url in failed}))
        if due is None or due > first + settings.event_retry_seconds * 1000:
            logger.warning(
                "event %s gave up after %d attempt(s) to %s: kept in %s",
                evt, attempts, hosts, keys.EVENT_DEAD,
            )
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(
                        keys.EVENT_DEAD,
                        {**dict(fields), "id": evt, "u": str(user_id),
                         "n": str(attempts), "failed": hosts},
                        maxlen=keys.EVENT_LOG_MAXLEN, approximate=True,
                    )
                    pipe.hincrby(keys.stats(), Counter.EVENTS_DEAD_LETTERED, 1)
                    pipe.xdel(keys.events(user_id), entry_id)
                    pipe.delete(keys.event_retry(user_id))
                    await pipe.execute()
            return True
        logger.info(
            "event %s: attempt %d to %s failed; next in %g s",
            evt, attempts, hosts, schedule[attempts - 1],
        )
        retry = keys.event_retry(user_id)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(retry, mapping={
                    "e": entry_id, "p": "1", "f": str(first), "n": str(attempts),
                    "due": str(due), "ok": json.dumps(sorted(done)),
                })
                pipe.expire(retry, settings.event_retry_seconds + 86400)
                pipe.zadd(keys.EVENT_DUE, {str(user_id): due})
                await pipe.execute()
        self._due_noted.set()
        return False

    async def _post(self, hook: EventWebhook, evt: str, body: str) -> bool:
        """One signed attempt, within EVENT_TIMEOUT_SECONDS in all (its answer's body
        read up to BODY_CAP, the rest left unread); True on a 2xx."""
        moment = datetime.now(UTC)
        signature = " ".join(
            self._signers[secret].sign(evt, moment, body) for secret in hook.secrets
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "tglogin-webhooks",
            "webhook-id": evt,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature,
        }
        try:
            async with asyncio.timeout(self.settings.event_timeout_seconds):
                async with self._http.stream(
                    "POST", hook.url, content=body.encode(), headers=headers
                ) as response:
                    read = 0
                    # raw: a compressed answer is never inflated
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= BODY_CAP:
                            break  # leaving the block closes the connection
        except TimeoutError:  # the attempt's deadline (a slow or trickling receiver)
            outcome, ok = "deadline", False
        except httpx.HTTPError as exc:
            outcome, ok = type(exc).__name__, False
        else:
            outcome = str(response.status_code)
            ok = 200 <= response.status_code < 300
        counter = Counter.WEBHOOKS_DELIVERED if ok else Counter.WEBHOOK_ATTEMPTS_FAILED
        with contextlib.suppress(Unavailable), unavailable_on_error():
            await self.redis.hincrby(keys.stats(), counter, 1)
        logger.log(
            logging.DEBUG if ok else logging.WARNING, "webhook %s to %s: %s",
            evt, urlsplit(hook.url).hostname, outcome,
        )
        return ok
