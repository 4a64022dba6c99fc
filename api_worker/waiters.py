"""Waking waiting polls: one pub/sub listener per API process, one event per waiting request.

`Waiters.run` is a task started in the app's lifespan. It keeps one Redis
subscription to the "request decided" channel and sets the events of the
requests waiting on each id hash it hears. Whenever the subscription is
(re)established or lost it wakes every waiter, since a decision may have
slipped through the gap; waiters then read the status again, which answers
503 while Redis is down, and otherwise carry on waiting. It reconnects by
itself, with a growing pause, and logs each failure.

A waiter registers (`watch`) before it reads the status: a decision after
the read sets its event, a decision before it shows in the read. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import TypeVar

from starlette.requests import Request

from api_worker.errors import InvalidRequest, ServiceUnavailable
from shared.store import Unavailable
from shared.waiting import wait_set

logger = logging.getLogger(__name__)

RETRY_FIRST = 0.1  # seconds before the first resubscribe attempt
RETRY_MAX = 2.0

T = TypeVar("T")
MAX_WAIT = 30  # seconds a long poll (`?wait=`) may be held
_DIGITS = re.compile(r"[0-9]{1,6}")
Feed = Callable[[], AsyncGenerator[str | None, None]]


def wait_param(request: Request) -> int:
    """The `wait` query parameter of a long poll: whole seconds from 0 to MAX_WAIT, 0 when
    absent; InvalidRequest otherwise."""
    raw = request.query_params.get("wait")
    if raw is None:
        return 0
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_WAIT:
        raise InvalidRequest(f"wait must be a whole number of seconds from 0 to {MAX_WAIT}.")
    return int(raw)


class Waiters:
    def __init__(self, feed: Feed) -> None:
        self._feed = feed
        self._events: dict[str, set[asyncio.Event]] = {}
        self._closed = False
        self.subscribed = False

    @contextlib.contextmanager
    def watch(self, id_hash: str) -> Iterator[asyncio.Event]:
        """An event set when the request may have changed; registered for the block."""
        event = asyncio.Event()
        if self._closed:
            event.set()  # shutting down: nobody waits any more
        events = self._events.setdefault(id_hash, set())
        events.add(event)
        try:
            yield event
        finally:
            events.discard(event)
            if not events:
                self._events.pop(id_hash, None)

    async def hold(
        self, id_hash: str, read: Callable[[], Awaitable[T]], pending: Callable[[T], bool],
        seconds: float,
    ) -> T:
        """What `read` answers once it is no longer `pending`, or after `seconds` (a long
        poll): read again each time the request may have changed. ServiceUnavailable
        when the listener loses Redis meanwhile (a read then would wait out
        REDIS_TIMEOUT once more, so the poll answers within one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            # watch first, then read: a change after the read wakes us, one before shows
            with self.watch(id_hash) as changed:
                found = await read()
                remaining = deadline - loop.time()
                if not pending(found) or remaining <= 0 or self._closed:
                    return found
                logger.debug("login poll held for up to %.1f s", remaining)
                # on time out, read once more: the answer carries the freshest expires_in
                if await wait_set(changed, remaining) \
                        and not self.subscribed and not self._closed:
                    raise ServiceUnavailable("Redis stopped answering; try again shortly.")

    @property
    def closed(self) -> bool:
        return self._closed

    def waiting(self) -> int:
        return sum(len(events) for events in self._events.values())

    def _wake(self, id_hash: str) -> None:
        for event in self._events.get(id_hash, ()):
            event.set()

    def wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    def close(self) -> None:
        """Let every waiting request answer now, and later ones not wait (shutdown)."""
        self._closed = True
        self.wake_all()

    async def run(self) -> None:
        """Listen until cancelled, resubscribing after every loss."""
        delay = RETRY_FIRST
        while True:
            try:
                async with aclosing(self._feed()) as feed:
                    async for id_hash in feed:
                        if id_hash is None:
                            self.subscribed = True
                            delay = RETRY_FIRST
                            logger.info("listening for login decisions")
                            self.wake_all()  # anything before now: read it again
                        else:
                            self._wake(id_hash)
            except Unavailable as exc:
                logger.warning(
                    "lost the login-decision subscription (%s); resubscribing in %.1f s",
                    exc,
                    delay,
                )
            except Exception:  # never let the listener die: held polls would sleep it out
                logger.exception(
                    "unexpected error in the login-decision listener; resubscribing in %.1f s",
                    delay,
                )
            finally:
                if self.subscribed:
                    self.subscribed = False
                    self.wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
