"""Handle updates at least once and answer each once, however they arrive.

`Dispatcher.handle` wraps python-telegram-bot's `process_update` in the
update ledger (`shared.ledger`): an update already handled is only confirmed;
one another live process is handling is waited for; otherwise it is claimed,
handled, and marked handled. It answers whether the update may now be
confirmed to Telegram (the polling offset moves past it, the webhook answers
200). An update whose handling failed for a reason that may pass (Telegram
unreachable, a 429 that outlasted the retries) is given back and not
confirmed, so Telegram delivers it again. While Redis is unreachable updates
are handled without the ledger (the handlers answer "temporarily
unavailable").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar

from telegram import Update
from telegram.error import BadRequest, NetworkError, RetryAfter

from shared.ledger import Claim, UpdateKey, UpdateLedger
from shared.store import Unavailable

logger = logging.getLogger(__name__)

# how long an update another live process is handling is waited for before it is left
# for Telegram to deliver again (s), and how often its state is looked at meanwhile
BUSY_WAIT = 20.0
BUSY_POLL = 0.5
# updates handled at once in one process (each chat's in order)
CONCURRENCY = 64

ProcessUpdate = Callable[[Update], Awaitable[None]]
# errors the error handler saw while one update was handled (set per update)
handling_errors: ContextVar[list[BaseException] | None] = ContextVar(
    "handling_errors", default=None
)


def may_pass(error: BaseException) -> bool:
    """Whether handling the update again later may succeed (Telegram unreachable or busy)."""
    if isinstance(error, RetryAfter):
        return True
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


def key_of(update: Update, bot_id: int) -> UpdateKey:
    return UpdateKey.of(bot_id, update.update_id, update.to_dict())


def _chat_of(update: Update) -> object:
    """What orders updates: the chat, else the user, else nothing (the update alone)."""
    if update.effective_chat is not None:
        return ("chat", update.effective_chat.id)
    if update.effective_user is not None:
        return ("user", update.effective_user.id)
    return ("update", update.update_id)


class Dispatcher:
    """Feeds updates to the Application through the ledger."""

    def __init__(self, process: ProcessUpdate, ledger: UpdateLedger) -> None:
        self._process = process
        self.ledger = ledger
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def handle(self, update: Update) -> bool:
        """Handle `update` unless it was; True once it may be confirmed to Telegram."""
        key = key_of(update, self.ledger.bot_id)
        try:
            tracked = await self._claim(key)
        except _Busy:
            return False
        if tracked is None:
            return True  # handled before: only confirm it
        errors: list[BaseException] = []
        reset = handling_errors.set(errors)
        try:
            async with self._slots:
                await self._process(update)
        finally:
            handling_errors.reset(reset)
        if any(may_pass(error) for error in errors):
            logger.warning("update %d will be handled again: %s", update.update_id, errors[-1])
            if tracked:
                await self._quietly(self.ledger.release(key))
            return False
        if tracked:
            await self._quietly(self.ledger.finish(key))
        return True

    async def _claim(self, key: UpdateKey) -> bool | None:
        """True: claimed; False: Redis is unavailable, handle it untracked; None: handled
        already. Raises _Busy when another live process kept it past BUSY_WAIT."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT
        while True:
            try:
                claim, alive_ms = await self.ledger.begin(key)
            except Unavailable as exc:
                logger.warning("update %d handled without the ledger: %s", key.update_id, exc)
                return False
            if claim is Claim.HANDLED:
                return None
            if claim is Claim.MINE:
                return True
            if loop.time() >= deadline:
                logger.info("update %d is still being handled elsewhere", key.update_id)
                raise _Busy
            # another live process has it: look again when it may have finished
            await asyncio.sleep(min(BUSY_POLL, alive_ms / 1000))

    @staticmethod
    async def _quietly(operation: Awaitable[None]) -> None:
        try:
            await operation
        except Unavailable as exc:
            logger.warning("could not record an update in the ledger: %s", exc)

    async def handle_batch(self, updates: Sequence[Update], stopping: asyncio.Event) -> int:
        """Handle a fetched batch, each chat's updates in order and chats side by side.

        Returns the offset that confirms what may be confirmed: past the whole
        batch, or up to the first update not handled (failed, or left because
        the process is stopping), which Telegram then sends again.
        """
        groups: dict[object, list[Update]] = {}
        for update in updates:
            groups.setdefault(_chat_of(update), []).append(update)
        left: list[int] = []

        async def run(group: list[Update]) -> None:
            for n, update in enumerate(group):
                if stopping.is_set() or not await self.handle(update):
                    left.extend(u.update_id for u in group[n:])
                    return

        await asyncio.gather(*(run(group) for group in groups.values()))
        if left:
            return min(left)
        return max(update.update_id for update in updates) + 1


class _Busy(Exception):
    """Another live process kept handling the update past BUSY_WAIT."""
