"""Handle updates at least once and answer each once, however they arrive.

`Dispatcher.handle` wraps python-telegram-bot's `process_update` in the
update ledger (`shared.ledger`): an update already handled is only confirmed;
one another live process is handling is waited for; otherwise it is claimed,
handled, and marked handled. It answers whether the update may now be
confirmed to Telegram (the polling offset moves past it, the webhook answers
200). An update whose handling failed for a reason that may pass (Telegram
unreachable, a 429 that outlasted the retries) is given back and not
confirmed, so Telegram delivers it again; after `MAX_TRIES` such failures it
is given up (logged as an error), so one update can never hold up the rest
for good. The same update arriving twice at one process (a webhook retry
while the first delivery is still being handled) waits for the first.
While Redis is unreachable updates are handled without the ledger (the
handlers answer "temporarily unavailable").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from telegram import Update
from telegram.error import BadRequest, NetworkError, RetryAfter

from shared.ledger import Claim, UpdateKey, UpdateLedger
from shared.store import Unavailable
from shared.waiting import wait_set

logger = logging.getLogger(__name__)

ProcessUpdate = Callable[[Update], Awaitable[None]]
# how long an update another live process is handling is waited for before it is left
# for Telegram to deliver again (s), and how often its state is looked at meanwhile
BUSY_WAIT = 20.0
BUSY_POLL = 0.5
# updates handled at once in one process (each chat's in order)
CONCURRENCY = 64
# failures that may pass, after which an update is given up rather than tried again
MAX_TRIES = 5

# errors the error handler saw while one update was handled (set per update)
handling_errors: ContextVar[list[BaseException] | None] = ContextVar(
    "handling_errors", default=None
)


def may_pass(error: BaseException) -> bool:
    """Whether handling the update again later may succeed (Telegram unreachable or busy).

    A reply that timed out may have reached Telegram all the same; handling the
    update again may then send it twice, which beats never sending it.
    """
    if isinstance(error, RetryAfter):
        return True
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


# the key of the update being handled (set per update): its fingerprint is made once
_handling: ContextVar[tuple[Update, UpdateKey] | None] = ContextVar("_handling", default=None)


def key_of(update: Update, bot_id: int) -> UpdateKey:
    """The ledger's key of `update`: the one `Dispatcher.handle` made, while it handles
    it; else made from the update serialised back (an `Update` built in code)."""
    handling = _handling.get()
    if handling is not None and handling[0] is update and handling[1].bot_id == bot_id:
        return handling[1]
    return UpdateKey.of(bot_id, update.update_id, update.to_dict())


def chat_of(update: Update) -> object:
    """What orders updates: the chat, else the user, else nothing (the update alone)."""
    if update.effective_chat is not None:
        return ("chat", update.effective_chat.id)
    if update.effective_user is not None:
        return ("user", update.effective_user.id)
    return ("update", update.update_id)


class RedisHealth:
    """Whether Redis failed moments ago. While it did, the steps of an update that can
    be done without it (the ledger's claim, the flood-limit slot) are skipped, so a
    user waits for one Redis timeout (the handler's own step) before hearing
    "temporarily unavailable", not for one per step."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._down_until = 0.0

    def failed(self) -> None:
        self._down_until = asyncio.get_running_loop().time() + self.seconds

    @property
    def down(self) -> bool:
        return asyncio.get_running_loop().time() < self._down_until


class _Busy(Exception):
    """Another live process kept handling the update past BUSY_WAIT."""


class Dispatcher:
    """Feeds updates to the Application through the ledger."""

    def __init__(
        self, process: ProcessUpdate, ledger: UpdateLedger, stopping: asyncio.Event
    ) -> None:
        self._process = process
        self.ledger = ledger
        self.stopping = stopping  # set when the process is stopping: busy waits end
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._in_hand: dict[str, asyncio.Future[bool]] = {}
        self.health = RedisHealth()
        self._tries: dict[str, int] = {}

    async def handle(self, update: Update, content: dict[str, Any] | None = None) -> bool:
        """Handle `update` unless it was; True once it may be confirmed to Telegram.
        `content`: the update as the Bot API sent it, which the ledger fingerprints
        (without it, the update serialised back)."""
        if content is None:
            key = key_of(update, self.ledger.bot_id)
        else:
            key = UpdateKey.of(self.ledger.bot_id, update.update_id, content)
        name = str(key)
        earlier = self._in_hand.get(name)
        if earlier is not None:  # the same update again while the first is in hand
            return await asyncio.shield(earlier)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_hand[name] = future
        try:
            result = await self._handle(update, key)
        except BaseException:
            future.set_result(False)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._in_hand[name]

    async def _handle(self, update: Update, key: UpdateKey) -> bool:
        try:
            tracked = await self._claim(key)
        except _Busy:
            return False
        if tracked is None:
            return True  # handled before: only confirm it
        errors: list[BaseException] = []
        reset = handling_errors.set(errors)
        reset_key = _handling.set((update, key))
        try:
            async with self._slots:
                await self._process(update)
        finally:
            _handling.reset(reset_key)
            handling_errors.reset(reset)
        name = str(key)
        if any(may_pass(error) for error in errors):
            tries = self._tries[name] = self._tries.get(name, 0) + 1
            if tries < MAX_TRIES:
                logger.warning("update %d will be handled again (try %d of %d): %s",
                               update.update_id, tries, MAX_TRIES, errors[-1])
                if tracked:
                    await self._quietly(self.ledger.release(key))
                return False
            logger.error("update %d failed %d times; giving it up: %s",
                         update.update_id, tries, errors[-1])
        self._tries.pop(name, None)
        if tracked:
            await self._quietly(self.ledger.finish(key))
        return True

    async def _claim(self, key: UpdateKey) -> bool | None:
        """True: claimed; False: Redis is unavailable, handle it untracked; None: handled
        already. Raises _Busy when another live process kept it past BUSY_WAIT (or this
        process is stopping)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT
        if self.health.down:
            return False  # Redis failed moments ago: do not wait for it twice
        while True:
            try:
                claim, alive_ms = await self.ledger.begin(key)
            except Unavailable as exc:
                self.health.failed()
                logger.warning("update %d handled without the ledger: %s", key.update_id, exc)
                return False
            if claim is Claim.HANDLED:
                return None
            if claim is Claim.MINE:
                return True
            if loop.time() >= deadline or self.stopping.is_set():
                logger.info("update %d is still being handled elsewhere", key.update_id)
                raise _Busy
            # another live process has it: look again when it may have finished
            await wait_set(self.stopping, min(BUSY_POLL, alive_ms / 1000))

    @staticmethod
    async def _quietly(operation: Awaitable[None]) -> None:
        try:
            await operation
        except Unavailable as exc:
            logger.warning("could not record an update in the ledger: %s", exc)
