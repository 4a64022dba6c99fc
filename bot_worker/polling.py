"""Leased polling: however many bot processes run, one calls getUpdates at a time.

Each process tries for the lease (`shared.lease`) every `FOLLOW_SECONDS`; the
holder renews it every third of its length and polls. The offset it sends
(which confirms everything below it to Telegram) never passes an update that
was not handled, so a holder killed with -9 leaves what it held to the next
holder, who takes over within a lease length plus one try (about 12 s).

Fetching goes on while updates are handled: each chat's updates are handled
in order, chats side by side, and a chat with a backlog (one user sending
fifty messages, each reply waiting for the per-chat flood limit) never holds
up the others. Updates still in hand come back in every getUpdates until
they are confirmed; `UpdatesRequest` drops them from the answer before
python-telegram-bot builds objects of them (most of a busy bot's CPU went to
building the same updates again and again). When a poll brings nothing new the
poller waits instead of asking again at once: for something in hand to finish
(and `REPOLL_GAP` at least) or, when the answer was full (`LIMIT` updates, so
nothing newer can come before the offset moves), for the offset to move by
`REFILL`.

Telegram is the final judge: a getUpdates answered 409 means someone else
polls; this process gives its lease back and waits at least a lease length
(longer, with jitter, each time it happens again) before trying. A holder
that loses Redis keeps polling, and a process that has not reached Redis for
a whole lease length polls without one: nobody can hold a lease in a Redis
nobody reaches, and users should hear "temporarily unavailable" rather than
nothing. Once Redis answers, the lease decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from bot_worker.dispatch import Dispatcher, chat_of
from shared.lease import LEASE_MS, Leases
from shared.store import Unavailable
from shared.waiting import wait_set

logger = logging.getLogger(__name__)

# seconds one long poll may wait for updates; well inside a lease
POLL_TIMEOUT = 5
# seconds between a follower's tries for the lease
FOLLOW_SECONDS = 2.0
# seconds between the holder's renewals
RENEW_SECONDS = LEASE_MS / 3000
# seconds to wait after a failed getUpdates or a failed update, doubling up to the cap
RETRY_FIRST, RETRY_CAP = 0.5, 10.0
# the longest wait (s) after repeated 409s
CONFLICT_CAP = 60.0
# with nothing new fetched, wait this long (s) at most for something in hand to finish
IDLE_WAIT = 1.0
# updates one getUpdates answers at most (the Bot API's own maximum)
LIMIT = 100
# after a full answer with nothing new, the offset moves this far before the next poll
REFILL = LIMIT // 4
# after any other answer with nothing new, at least this long (s) before the next poll
# (a backlog's tail would otherwise bring back what is in hand once per finished update)
REPOLL_GAP = 0.1
ALLOWED_UPDATES = ["message", "channel_post", "callback_query"]


class UpdatesRequest(HTTPXRequest):
    """The getUpdates connection. Drops the updates `skip` names from an answer before
    python-telegram-bot builds `Update` objects of them, and remembers how many the
    answer held (`fetched`) and each kept update as the Bot API sent it (`contents`,
    by update id: what the ledger fingerprints, far cheaper than serialising the
    `Update` back)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip: Callable[[int], bool] = _nothing
        self.fetched = 0
        self.contents: dict[int, dict[str, Any]] = {}

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        data = super().parse_json_payload(payload)
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(result, list):
            self.fetched = len(result)
            skip = self.skip
            kept: list[Any] = []
            contents: dict[int, dict[str, Any]] = {}
            for u in result:
                uid = u.get("update_id") if isinstance(u, dict) else None
                if isinstance(uid, int):
                    if skip(uid):
                        continue
                    contents[uid] = u
                kept.append(u)
            data["result"], self.contents = kept, contents
        return data


def _nothing(update_id: int) -> bool:
    return False


class _Conflict(Exception):
    """Telegram answered 409: someone else polls."""


class Poller:
    def __init__(
        self, bot: Bot, dispatcher: Dispatcher, leases: Leases,
        request: UpdatesRequest | None = None,
    ) -> None:
        self.bot = bot
        self.dispatcher = dispatcher
        self.leases = leases
        self.request = request  # the bot's getUpdates connection, when it is one

    async def run(self, stop: asyncio.Event) -> None:
        """Follow, lead when the lease is free, until `stop` is set."""
        loop = asyncio.get_running_loop()
        unreachable_since: float | None = None
        conflicts = 0
        while not stop.is_set():
            try:
                held = await self.leases.take_poller()
                unreachable_since = None
            except Unavailable as exc:
                logger.warning("cannot reach Redis for the polling lease: %s", exc)
                held = False
                if unreachable_since is None:
                    unreachable_since = loop.time()
                elif loop.time() - unreachable_since >= LEASE_MS / 1000:
                    # any lease has run out by now, and nobody can take one from this
                    # Redis: poll, so users hear "temporarily unavailable"
                    logger.warning("Redis unreachable for a lease length: polling without it")
                    held = True
            if not held:
                await wait_set(stop, FOLLOW_SECONDS)
                continue
            if await self._lead(stop):
                conflicts = 0
                continue
            # 409: someone else polls. Make room, longer each time it happens again
            conflicts += 1
            backoff = min(LEASE_MS / 1000 * 2 ** (conflicts - 1), CONFLICT_CAP)
            await wait_set(stop, backoff + random.uniform(0, 2))

    async def _lead(self, stop: asyncio.Event) -> bool:
        """Poll while holding the lease; False when Telegram said someone else polls."""
        logger.info("polling: this process holds the lease and calls getUpdates")
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lost), name="renew the polling lease")
        batch = _Batch(self.dispatcher, stop)
        if self.request is not None:
            self.request.skip = batch.skips
        conflict = False
        try:
            await self._delete_webhook()
            await self._poll(batch, stop, lost)
        except _Conflict as exc:
            logger.warning("polling: another process polls (%s); making room", exc.__cause__)
            conflict = True
        finally:
            renewer.cancel()
            try:
                await batch.finish()  # a stop past its grace cancels this wait
            finally:
                # whatever happened, hand over at once: confirm what was handled, give
                # the lease back (not after a 409 or a lost lease: it is not ours)
                if stop.is_set() and not (lost.is_set() or conflict):
                    await self._confirm(batch.offset())
                if not lost.is_set():
                    with contextlib.suppress(Unavailable):
                        await self.leases.release_poller()
                    logger.info("polling: lease given back")
            if self.request is not None:
                self.request.skip = _nothing
        return not conflict

    async def _poll(self, batch: _Batch, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """getUpdates and start handling until stopped or the lease is lost."""
        delay = RETRY_FIRST
        while not stop.is_set() and not lost.is_set():
            offset = batch.offset()
            fetch = asyncio.create_task(
                self.bot.get_updates(
                    offset=offset, limit=LIMIT, timeout=POLL_TIMEOUT,
                    allowed_updates=ALLOWED_UPDATES,
                ),
                name="getUpdates",
            )
            ended = asyncio.create_task(_either(stop, lost))
            await asyncio.wait({fetch, ended}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            if not fetch.done():
                fetch.cancel()  # the connection closes; Telegram forgets the long poll
                with contextlib.suppress(asyncio.CancelledError, TelegramError):
                    await fetch
                return
            try:
                updates = fetch.result()
            except Conflict as exc:
                raise _Conflict from exc
            except InvalidToken:
                raise
            except TelegramError as exc:
                # start again from Telegram's earliest unconfirmed update: a Bot API
                # that restarted may number its updates from 1 again, and the ledger
                # skips whatever was handled already
                batch.forget_offset()
                logger.warning("getUpdates failed (%s); again in %.1f s", exc, delay)
                await wait_set(stop, delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            delay = RETRY_FIRST
            batch.confirmed(offset)
            fetched, contents = len(updates), {}
            if self.request is not None:
                fetched, contents = self.request.fetched, self.request.contents
            if not batch.take(updates, contents) and fetched:
                # all of it is in hand, handled, or waiting to be tried again: wait for
                # some of it to finish rather than ask again at once; after a full answer
                # nothing new can come until the offset moves
                wait = min(IDLE_WAIT, batch.next_retry_in())
                if fetched >= LIMIT and offset is not None:
                    await batch.advanced(offset + REFILL, wait)
                else:
                    await batch.settled(wait)
                    await wait_set(stop, REPOLL_GAP)

    async def _renew(self, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                held = await self.leases.take_poller()
            except Unavailable as exc:
                logger.warning("cannot renew the polling lease (%s); polling on", exc)
                continue
            if not held:
                logger.warning("polling: the lease went to another process; following")
                lost.set()
                return

    async def _delete_webhook(self) -> None:
        """getUpdates works only without a webhook (switching back from webhook mode)."""
        try:
            await self.bot.delete_webhook(drop_pending_updates=False)
            await self.leases.mark_webhook(None)
        except (TelegramError, Unavailable) as exc:
            logger.warning("could not delete the webhook: %s", exc)

    async def _confirm(self, offset: int | None) -> None:
        """On a stop, confirm what was handled so the next poller need not skip it."""
        if offset is None:
            return
        try:
            await self.bot.get_updates(offset=offset, timeout=0, limit=1)
        except TelegramError as exc:
            logger.info("could not confirm handled updates before stopping: %s", exc)


class _Batch:
    """The updates one holder fetched and has not confirmed: in hand, handled, or to be
    handled again after a failure (each chat's in order)."""

    def __init__(self, dispatcher: Dispatcher, stop: asyncio.Event) -> None:
        self.dispatcher = dispatcher
        self.stop = stop
        self.tasks: dict[int, asyncio.Task[bool]] = {}
        self.handled: set[int] = set()
        self.highest: int | None = None
        self._tails: dict[object, asyncio.Task[bool]] = {}
        self._retry_at: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._settled = asyncio.Event()

    def offset(self) -> int | None:
        """What getUpdates may confirm: everything below the first update not handled."""
        waiting = set(self.tasks) | set(self._retry_at)
        if waiting:
            return min(waiting)
        return None if self.highest is None else self.highest + 1

    def forget_offset(self) -> None:
        """After a failed getUpdates: ask for everything unconfirmed again."""
        if not self.tasks and not self._retry_at:
            self.highest = None
            self.handled.clear()

    def skips(self, uid: int) -> bool:
        """Whether `take` would pass over update `uid` (in hand, handled, or not due)."""
        if uid in self.tasks or uid in self.handled:
            return True
        due = self._retry_at.get(uid)
        return due is not None and due > asyncio.get_running_loop().time()

    def next_retry_in(self) -> float:
        """Seconds until the earliest update waiting to be tried again is due."""
        if not self._retry_at:
            return IDLE_WAIT
        now = asyncio.get_running_loop().time()
        return max(0.01, min(self._retry_at.values()) - now)

    def take(self, updates: Sequence[Update],
             contents: dict[int, dict[str, Any]] | None = None) -> bool:
        """Start handling what is new in `updates` (`contents`: each as the Bot API sent
        it, by update id, where known); whether anything was."""
        contents = contents or {}
        loop = asyncio.get_running_loop()
        started = False
        for update in updates:
            uid = update.update_id
            if uid in self.tasks or uid in self.handled or self.stop.is_set():
                continue
            if self._retry_at.get(uid, 0.0) > loop.time():
                continue
            self._retry_at.pop(uid, None)
            chat = chat_of(update)
            task = asyncio.create_task(
                self._run(update, self._tails.get(chat), contents.get(uid)))
            self.tasks[uid] = self._tails[chat] = task
            task.add_done_callback(functools.partial(self._done, uid, chat))
            self.highest = max(uid, self.highest or uid)
            started = True
        return started

    async def _run(self, update: Update, before: asyncio.Task[bool] | None,
                   content: dict[str, Any] | None) -> bool:
        if before is not None and not await asyncio.shield(before):
            return False  # an earlier update of this chat must go first
        if self.stop.is_set():
            return False  # left to the next poller
        return await self.dispatcher.handle(update, content)

    def _done(self, uid: int, chat: object, task: asyncio.Task[bool]) -> None:
        del self.tasks[uid]
        if self._tails.get(chat) is task:
            del self._tails[chat]
        ok = not task.cancelled() and task.exception() is None and task.result()
        if ok:
            # remembered until Telegram confirmed it: a getUpdates already on its way
            # may bring it once more
            self.handled.add(uid)
            self._delay.pop(uid, None)
        else:  # not handled (failed, or left at a stop): the offset must not pass it
            delay = self._delay[uid] = min(self._delay.get(uid, RETRY_FIRST / 2) * 2, RETRY_CAP)
            self._retry_at[uid] = asyncio.get_running_loop().time() + delay
        self._settled.set()

    def confirmed(self, offset: int | None) -> None:
        """A getUpdates with `offset` succeeded: Telegram forgot everything below it."""
        if offset is not None:
            self.handled = {h for h in self.handled if h >= offset}

    async def settled(self, seconds: float) -> None:
        """Until some update in hand finishes, or `seconds` pass."""
        self._settled.clear()
        await wait_set(self._settled, seconds)

    async def advanced(self, offset: int, seconds: float) -> None:
        """Until the offset reaches `offset` (or nothing is in hand), or `seconds` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.tasks and (self.offset() or 0) < offset:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._settled.clear()
            await wait_set(self._settled, left)

    async def finish(self) -> None:
        """Let what is in hand finish; if this wait is cancelled (the stop's grace ran
        out), cancel what is left: it stays unconfirmed, for the next poller."""
        tasks = list(self.tasks.values())
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.warning("updates still in hand when the stop's grace ran out: left to "
                           "Telegram")
            raise


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
