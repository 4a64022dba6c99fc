"""Leased polling: however many bot processes run, one calls getUpdates at a time.

Each process tries for the lease (`shared.lease`) every `FOLLOW_SECONDS`; the
holder renews it every third of its length and polls. A batch is confirmed
(the next getUpdates' offset moves past it) only once every update in it was
handled, so a holder killed with -9 leaves its batch to the next holder, who
takes over within a lease length plus one try (about 12 s).

Telegram is the final judge: a getUpdates answered 409 means someone else
polls, and this process stops polling at once. That is also why a holder
that loses Redis keeps polling, and why a process that has not reached Redis
for a whole lease length polls without one: nobody can hold a lease in a
Redis nobody reaches, users should hear "temporarily unavailable" rather than
nothing, and should another process reach Redis and take over, the 409
settles it. Once Redis answers, the lease decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Bot
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError

from bot_worker.dispatch import Dispatcher
from shared.lease import LEASE_MS, Leases
from shared.store import Unavailable

logger = logging.getLogger(__name__)

# seconds one long poll may wait for updates; well inside a lease
POLL_TIMEOUT = 5
# seconds between a follower's tries for the lease
FOLLOW_SECONDS = 2.0
# seconds between the holder's renewals
RENEW_SECONDS = LEASE_MS / 3000
# seconds to wait after a failed getUpdates or batch, doubling up to the cap
RETRY_FIRST, RETRY_CAP = 0.5, 10.0
ALLOWED_UPDATES = ["message", "channel_post", "callback_query"]


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


class Poller:
    def __init__(self, bot: Bot, dispatcher: Dispatcher, leases: Leases) -> None:
        self.bot = bot
        self.dispatcher = dispatcher
        self.leases = leases

    async def run(self, stop: asyncio.Event) -> None:
        """Follow, lead when the lease is free, until `stop` is set."""
        loop = asyncio.get_running_loop()
        unreachable_since: float | None = None
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
            if held:
                await self._lead(stop)
            else:
                await _wait(stop, FOLLOW_SECONDS)

    async def _lead(self, stop: asyncio.Event) -> None:
        logger.info("polling: this process holds the lease and calls getUpdates")
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lost), name="renew the polling lease")
        offset: int | None = None
        try:
            await self._delete_webhook()
            offset = await self._poll(stop, lost)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if stop.is_set():
            await self._confirm(offset)
        if not lost.is_set():
            with contextlib.suppress(Unavailable):
                await self.leases.release_poller()
            logger.info("polling: lease given back")

    async def _poll(self, stop: asyncio.Event, lost: asyncio.Event) -> int | None:
        """getUpdates and handle until stopped or the lease is lost; the offset reached."""
        offset: int | None = None
        delay = RETRY_FIRST
        while not stop.is_set() and not lost.is_set():
            fetch = asyncio.create_task(
                self.bot.get_updates(
                    offset=offset, timeout=POLL_TIMEOUT, allowed_updates=ALLOWED_UPDATES
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
                break
            try:
                updates = fetch.result()
            except Conflict as exc:
                logger.warning("polling: another process polls (%s); following instead", exc)
                lost.set()
                break
            except InvalidToken:
                raise
            except (NetworkError, RetryAfter) as exc:
                # start again from Telegram's earliest unconfirmed update: a Bot API
                # that restarted may number its updates from 1 again, and the ledger
                # skips whatever was handled already
                offset = None
                logger.warning("getUpdates failed (%s); again in %.1f s", exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            if not updates:
                delay = RETRY_FIRST
                continue
            reached = await self.dispatcher.handle_batch(updates, stop)
            if reached <= updates[-1].update_id and not stop.is_set():
                # something must be handled again: not at once, not forever slower
                await _wait(stop, delay)
                delay = min(delay * 2, RETRY_CAP)
            else:
                delay = RETRY_FIRST
            offset = reached
        return offset

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


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
