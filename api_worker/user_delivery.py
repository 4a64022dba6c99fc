"""One user's events, delivered by the process that holds the user (`api_worker.delivery`
runs it for each wake, claimed wake and due user).

Rules of this module:
- One process delivers a user's events at a time (`keys.event_lock`, SET NX PX). A user
  another process holds is noted in `keys.EVENT_DUE` to be looked at again shortly, and a
  login stream its wake names is noted for the holder (`keys.event_logins`); the wake is
  then done with.
- The process that takes a user's lock re-scores the user in `keys.EVENT_DUE` to the
  lock's end (a lease, `event_due.lua`) rather than taking it off: a pass that fails (a
  Redis timeout) or is killed leaves the user due by itself. At the end the pass removes
  the user, or scores it when its first waiting event is due, only if the score is still
  its lease; a note made meanwhile (by another process finding the user busy) replaces
  the lease and stays.
- Order is per (user, client). The user's stream is read oldest first; an event whose
  client has an earlier event waiting (its retry not due yet, or failed in this pass) is
  passed over, so one client's failing endpoint holds back only that client's later
  events (a `session.ended` never arrives before its `login.approved`) while the other
  clients' go on. The user is due again when its first waiting event is.
- Before each event the lock is extended, only while this process still holds it (one
  that lost it stops for that user and notes it due: two processes never deliver one
  user's events at once), and the login streams noted for the user are drained: their
  events moved into the user's stream ahead of the newer ones
  (`shared.events.move_login_events`), then the stream is read again from its start.
  The notes are also read with every page of the user's stream, so they are drained
  when the stream is empty (a login noted for a holder that had nothing else to send)
  and once more before the pass ends. A note carries when it was made
  (`shared.events.note_member`); one naming a stream gone or empty is dropped once it
  is older than the grace (`shared.events.grace_ms`), and a younger one kept, the pass
  ending with the user due when its grace ends (its decision's script may not have run
  yet). A login event so goes out before the session it led to, whichever process held
  the login's wake.
- A wake is queued before its event's script (`shared.events`) and may be read first: a
  wake younger than the grace leaves a note with its time (its login stream, or ""),
  held or not, which every pass keeps until the grace ends, ending with the user due
  then.
- Each event goes to its client's pull stream (`keys.event_client`, read by GET
  /v1/events, woken through `keys.LOGIN_DECIDED`) and is POSTed to each of its client's
  endpoints that wants its type (`api_worker.webhook_sender`), with its stable id as
  `webhook-id`. Once every target has it, it leaves the user's stream (`event_done.lua`,
  which deletes the key once it is empty). A failed attempt is retried after
  EVENT_RETRY_SCHEDULE's waits while within EVENT_RETRY_SECONDS of the first; then the
  event goes to `keys.EVENT_DEAD` (counted in /metrics) and leaves the stream. Its retry
  state is kept by its stable id (`keys.event_retry`): a move does not reset it.
- The lock outlasts an attempt (EVENT_TIMEOUT_SECONDS and a margin, the larger of 5 s
  and four REDIS_TIMEOUTs: room for the Redis commands between two extensions): a dead
  process's lock lapses, and its user is delivered again by whoever claims the wake or
  finds the user due (its lease ran out).
- What reaches a client's pull stream is the event's data as written (an approval's
  `approval_seed`, never its id: a copy of Redis gives no approval id); GET /v1/events
  turns it into what the client sees (`shared.events.client_data`), by the entry's `u`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from api_worker.webhook_sender import WebhookSender
from shared import keys
from shared.codes import now_ms
from shared.counters import Counter
from shared.events import (
    client_data,
    client_hash,
    event_id,
    grace_ms,
    is_login_events,
    move_login_events,
    note_member,
    parse_fields,
    parse_note,
    webhook_body,
)
from shared.hashing import random_hex
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import Settings

logger = logging.getLogger(__name__)

# entries of a user's stream read at a time
PAGE = 64
# a user another process is delivering to is looked at again after this (ms)
BUSY_AGAIN_MS = 1000
# how much longer than one attempt's deadline the user's lock lasts (ms): room for the
# Redis commands between two extensions, at least LOCK_MARGIN_MS and LOCK_MARGIN_TIMEOUTS
# times REDIS_TIMEOUT (each command may take that long before it fails)
LOCK_MARGIN_MS = 5000
LOCK_MARGIN_TIMEOUTS = 4
# an emptied stream whose newest id is younger than this is kept for now (ms), lest a
# stream made again give a new event an id (a webhook-id) just used; looked at again
EMPTY_MARGIN_MS = 1000
# a pull stream is trimmed back to EVENT_LOG_MAXLEN once this many more pile up
PULL_SLACK = 100


class _Step(enum.Enum):
    DONE = "done"  # delivered or dead-lettered: out of the stream
    LOST = "lost"  # this process no longer holds the user
    MOVED = "moved"  # login events were moved in: read the stream again


class UserDelivery:
    """Delivering one user's events at a time, under the user's lock."""

    def __init__(self, settings: Settings, redis: Redis, note_due: Callable[[], None]) -> None:
        self.settings = settings
        self.redis = redis
        self.sender = WebhookSender(settings, redis)
        # the pull streams of the API_KEYS clients (or of "" when the API is open)
        names = [client.name for client in settings.api_keys] or [""]
        self._pull = {name: client_hash(settings.auth_secret, name) for name in names}
        # one attempt (its whole deadline) with room to spare, extended before each event
        # and each attempt; a dead process's lock expires
        self._lock_ms = int(settings.event_timeout_seconds * 1000) + max(
            LOCK_MARGIN_MS, int(settings.redis_timeout * 1000 * LOCK_MARGIN_TIMEOUTS)
        )
        self._extend = scripts(redis).get("lock_extend.lua")
        self._done = scripts(redis).get("event_done.lua")
        self._pull_append = scripts(redis).get("event_pull.lua")
        self._due = scripts(redis).get("event_due.lua")
        # how long after its wake or note an emitting script may still land (ms)
        self._grace = grace_ms(settings)
        self._note_due = note_due  # wakes the due-users loop of this process

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def deliver(
        self, user_id: int, login_stream: str | None = None, woke: int | None = None
    ) -> bool:
        """Deliver what of `user_id`'s events can go now, after moving the events of
        every login stream noted for the user. `login_stream` (a login request's) is
        noted first, and so is a wake younger than the grace (`woke`: its time, ms; its
        event's script may not have run yet): every pass, whichever process makes it,
        keeps such a note until the grace ends and leaves the user due then. False when
        another process holds the user (it is noted due, and finds the note)."""
        lock, token = keys.event_lock(user_id), random_hex(8)
        noted_at = now_ms() if woke is None else woke
        note = None
        if login_stream is not None:
            note = note_member(login_stream, noted_at)
        elif woke is not None and woke + self._grace > now_ms():  # only a time
            note = note_member("", noted_at)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                if note is not None:
                    pipe.sadd(keys.event_logins(user_id), note)
                pipe.set(lock, token, nx=True, px=self._lock_ms)
                *_, taken = await pipe.execute()
            if not taken:
                # look again shortly, lest the holder had just finished (a note: it
                # outlives the holder's lease)
                await self._due(keys=[keys.EVENT_DUE], args=[
                    user_id, now_ms() + BUSY_AGAIN_MS, "",
                ])
                self._note_due()
                return False
        try:
            # taken: whatever was noted for this user is now this process's to do; the
            # user stays due at the lock's end (a lease) until this pass says otherwise
            lease = f"{now_ms() + self._lock_ms}.5"
            with unavailable_on_error():
                await self.redis.zadd(keys.EVENT_DUE, {str(user_id): lease})
            due = await self._pass(user_id, lock, token)
            with unavailable_on_error():
                await self._due(keys=[keys.EVENT_DUE], args=[
                    user_id, "" if due is None else due, lease,
                ])
            if due is not None:
                self._note_due()
        finally:
            with contextlib.suppress(Unavailable), unavailable_on_error():
                await scripts(self.redis).get("release.lua")(keys=[lock], args=[token])
        return True

    async def _due_at(self, user_id: int, due: int) -> None:
        """Note the user due at `due` (ms): kept whatever the pass running ends with."""
        with unavailable_on_error():
            await self._due(keys=[keys.EVENT_DUE], args=[user_id, due, ""])
        self._note_due()

    async def _pass(self, user_id: int, lock: str, token: str) -> int | None:
        """Deliver, oldest first, each event whose client has none waiting before it,
        after moving in the login streams noted; when the user is due again (None: not
        at all, or the lock is lost): when the first event left waiting is, or a young
        note's grace ends, whichever comes first."""
        stream = keys.events(user_id)
        waiting: set[str] = set()  # clients whose earlier event waits
        due: int | None = None
        start = "-"
        while True:
            with unavailable_on_error():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xrange(stream, start, "+", count=PAGE)
                    pipe.smembers(keys.event_logins(user_id))
                    page, noted = await pipe.execute()
            # login streams noted for this user: moved in before anything is sent, and
            # before the pass ends (a login event must not wait for the user's next
            # event); then the stream is read again from its start
            if noted:
                moved, again = await self._drain(user_id, sorted(noted))
                due = _earliest(due, again)
                if moved:
                    start = "-"
                    continue
            if not page:
                if start == "-":  # empty from the start: its key may be left to delete
                    await self._finish(user_id, "", "")
                return due
            for entry_id, fields in page:
                start = "(" + str(entry_id)
                client = str(fields.get("c", ""))
                if client in waiting:
                    continue
                step = await self._one(user_id, lock, token, str(entry_id), fields)
                if step is _Step.LOST:
                    return None
                if step is _Step.MOVED:
                    start = "-"
                    break
                if isinstance(step, int):
                    waiting.add(client)
                    due = _earliest(due, step)

    async def _drain(self, user_id: int, notes: list[str]) -> tuple[int, int | None]:
        """Move the user's events of the login streams these notes name into the user's
        stream, then drop the notes of each stream moved, and of each gone or empty (or
        holding none of this user's; or naming no stream, only a wake's time) only when
        the note is older than the grace: a younger one is kept (its script may not have
        run yet). How many were moved, and when the first kept note's grace ends (the
        user is due then; None: none kept)."""
        found: dict[str, list[tuple[str, int]]] = {}
        for member in notes:
            name, ms = parse_note(member)
            found.setdefault(name, []).append((member, ms))
        moved, again, drop = 0, None, []
        now = now_ms()
        for name, its_notes in found.items():
            count = await move_login_events(self.redis, user_id, name) if (
                is_login_events(name)) else 0
            moved += count
            for kept, ms in its_notes:
                if not count and ms + self._grace > now:
                    again = _earliest(again, ms + self._grace)
                else:
                    drop.append(kept)
        if drop:
            with unavailable_on_error():
                await self.redis.srem(keys.event_logins(user_id), *drop)
        return moved, again

    async def _still_held(self, user_id: int, lock: str, token: str) -> bool:
        """Extend the user's lock if this process still holds it; if not (it lapsed, and
        another process may have the user now), note the user due and say False."""
        with unavailable_on_error():
            if await self._extend(keys=[lock], args=[token, self._lock_ms]):
                return True
        await self._lost(user_id)
        return False

    async def _lost(self, user_id: int) -> None:
        await self._due_at(user_id, now_ms() + BUSY_AGAIN_MS)
        logger.warning("event delivery for a user stopped: its lock was lost")

    async def _one(
        self, user_id: int, lock: str, token: str, entry_id: str, fields: dict[Any, Any]
    ) -> _Step | int:
        """Try one event: done with it, or the ms when it is due again (it waits), or
        lost (the lock), or moved (login events came in ahead of it)."""
        type_, client, data, ms = parse_fields(fields)
        # a moved event's id is the one it had before the move (`eid`)
        evt = str(fields.get("eid") or event_id(user_id, entry_id))
        retry = keys.event_retry(user_id)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._extend(keys=[lock], args=[token, self._lock_ms], client=pipe)
                pipe.smembers(keys.event_logins(user_id))
                pipe.hget(retry, evt)
                held, noted, raw = await pipe.execute()
        if not held:
            await self._lost(user_id)
            return _Step.LOST
        if noted and (await self._drain(user_id, sorted(noted)))[0]:
            return _Step.MOVED
        state: dict[str, Any] = json.loads(raw) if raw else {}
        now = now_ms()
        if int(state.get("due", 0)) > now:
            return int(state["due"])
        hooks = [hook for hook in self.settings.event_webhooks
                 if hook.client == client and hook.wants(type_)]
        if not state.get("p"):
            # as written (an approval's seed, not its id): GET /v1/events fills it in
            await self._to_pull_stream(
                evt, user_id, type_, client, data, ms, retry, bool(hooks)
            )
            state["p"] = 1
        data = client_data(self.settings, user_id, type_, data)
        done = set(state.get("ok", []))
        failed: list[str] = []
        body = webhook_body(type_, ms, data)
        for hook in hooks:
            if hook.url in done:
                continue
            if not await self._still_held(user_id, lock, token):
                return _Step.LOST  # what went out is sent again, same webhook-id
            if await self.sender.post(hook, evt, body):
                done.add(hook.url)
            else:
                failed.append(hook.url)
        if not failed:
            await self._finish(user_id, entry_id, evt)
            return _Step.DONE
        return await self._after_failure(user_id, entry_id, evt, fields, state, done, failed)

    async def _finish(
        self, user_id: int, entry_id: str, evt: str, dead: dict[str, str] | None = None
    ) -> None:
        """The event out of the user's stream (and its retry state), with its dead letter
        when it ran out; the stream's key deleted once empty (with `entry_id` "": only
        that)."""
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                if dead is not None:
                    pipe.xadd(keys.EVENT_DEAD, dead,  # type: ignore[arg-type]
                              maxlen=keys.EVENT_LOG_MAXLEN, approximate=True)
                    pipe.hincrby(keys.stats(), Counter.EVENTS_DEAD_LETTERED, 1)
                await self._done(
                    keys=[keys.events(user_id), keys.event_retry(user_id)],
                    args=[entry_id, evt, EMPTY_MARGIN_MS], client=pipe,
                )
                *_, left = await pipe.execute()
        if int(left) < 0:  # emptied, kept a moment: deleted when looked at again
            await self._due_at(user_id, now_ms() + EMPTY_MARGIN_MS + BUSY_AGAIN_MS)

    async def _to_pull_stream(
        self, evt: str, user_id: int, type_: str, client: str, data: str, ms: int,
        retry: str, noted: bool,
    ) -> None:
        """Append the event to its client's pull stream, its data as written (`u` the
        user, for GET /v1/events to make an approval's id of its seed); `noted`: note
        that in its retry state (it has webhooks to go on to)."""
        chash = self._pull.get(client)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                if chash is not None:
                    await self._pull_append(keys=[keys.event_client(chash)], args=[
                        keys.EVENT_LOG_MAXLEN, PULL_SLACK,
                        "t", type_, "d", data, "ts", str(ms), "w", evt, "u", user_id,
                    ], client=pipe)
                if noted:
                    pipe.hset(retry, evt, json.dumps({"p": 1}))
                    pipe.expire(retry, self.settings.event_retry_seconds + 86400)
                await pipe.execute()
            if chash is not None:  # a Cluster pipeline takes no PUBLISH
                await self.redis.publish(keys.LOGIN_DECIDED, "evc:" + chash)

    async def _after_failure(
        self, user_id: int, entry_id: str, evt: str, fields: dict[Any, Any],
        state: dict[str, Any], done: set[str], failed: list[str],
    ) -> _Step | int:
        """Schedule the event's next attempt (the ms it is due) or give it up (done)."""
        settings = self.settings
        now = now_ms()
        attempts = int(state.get("n", 0)) + 1
        first = int(state.get("f", now))
        schedule = settings.event_retry_schedule
        due = now + int(schedule[attempts - 1] * 1000) if attempts <= len(schedule) else None
        hosts = ",".join(sorted({urlsplit(url).hostname or "?" for url in failed}))
        if due is None or due > first + settings.event_retry_seconds * 1000:
            logger.warning(
                "event %s gave up after %d attempt(s) to %s: kept in %s",
                evt, attempts, hosts, keys.EVENT_DEAD,
            )
            await self._finish(user_id, entry_id, evt, dead={
                **{str(k): str(v) for k, v in fields.items()}, "id": evt, "u": str(user_id),
                "n": str(attempts), "failed": hosts,
            })
            return _Step.DONE
        logger.info(
            "event %s: attempt %d to %s failed; next in %g s",
            evt, attempts, hosts, schedule[attempts - 1],
        )
        retry = keys.event_retry(user_id)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(retry, evt, json.dumps({
                    "p": 1, "f": first, "n": attempts, "due": due, "ok": sorted(done),
                }))
                pipe.expire(retry, settings.event_retry_seconds + 86400)
                await pipe.execute()
        return due


def _earliest(first: int | None, second: int | None) -> int | None:
    """The earlier of two times (ms), None standing for never."""
    if first is None:
        return second
    return first if second is None else min(first, second)
