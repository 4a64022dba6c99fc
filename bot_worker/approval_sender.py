"""Sending queued push approvals: a task of every bot process (polling or webhook).

`Sender.run` reads the approval queue as one consumer of its group
(`shared.approval_queue`), takes each approval to send (noted in its record first,
`Approvals.take`), sends it to its user through the Application's bot (so the shared
flood limiter holds), notes the message, and acknowledges the entry. Telegram's 403 (the
user blocked the bot) or 400 (no such chat, or any message Telegram refuses) makes the
approval `undeliverable` at once, which wakes the client's waiting poll. A failure that
may pass (Telegram unreachable) leaves the entry pending: this or another process
claims it again after `CLAIM_IDLE_MS`, until the approval expires. A process killed
mid-send leaves it to the others the same way; if Telegram had taken the message, the
user gets a second one (logged as sent again), whose buttons decide the same approval.

An entry whose approval another entry's send holds (the sweep queued it twice) waits,
pending, and is claimed again later: by then it was sent, or its sender died.

Beside it the sender sweeps (`sweeping`): every `SWEEP_EVERY` a round of
`Approvals.expire_due` queues approvals no bot took by their check time and marks the
approvals whose time is up expired (with approval.expired). Each bot process claims its
own share of the due approvals (`shared.approval_due`), so more bots sweep more. The
messages of approvals that turned expired are edited to say so, without buttons, off the
sweep's path: they wait in this process's edit queue for `EDITORS` tasks that send the
edits through the shared flood limiter, so a slow or flood-limited Telegram never holds
the sweep up. An edit lost with its process (killed, or the queue full) loses nothing
that counts: the approval is expired in Redis, and a tap on the message is told so and
edits it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram import Message
from telegram.error import BadRequest, Forbidden, TelegramError

from bot_worker.approval_texts import keyboard, outcome_text, prompt_text
from bot_worker.messages import lang_of
from shared.approvals import ApprovalQueue, Approvals, Decision, Entry, Expired, is_key_hash
from shared.store import Unavailable

logger = logging.getLogger(__name__)

# entries read or claimed at a time
BATCH = 16
# a sender that cannot reach Redis tries again after this long (s), doubling to the cap
RETRY_FIRST, RETRY_CAP = 0.5, 5.0
# how often pending entries of dead processes are looked for (s)
CLAIM_EVERY = 5.0
# how often a slow send says it is still working on its entry, and renews its note in
# the approval (s)
TOUCH_EVERY = 5.0
# how often consumers of processes long gone are forgotten (s)
FORGET_EVERY = 600.0
# how often the due approvals are looked at (s)
SWEEP_EVERY = 2.0
# edits of expired approvals' messages: tasks that send them side by side (each waits
# for the flood limiter), and how many may wait in the queue (more are dropped, logged)
EDITORS = 4
EDITS_WAITING = 10_000


class Sender:
    """Sends queued approvals as one consumer of the queue's group."""

    def __init__(self, bot: Any, approvals: Approvals, queue: ApprovalQueue) -> None:
        self.bot = bot
        self.approvals = approvals
        self.queue = queue
        self._block_ms = max(100, min(2000, int(approvals.settings.redis_timeout * 500)))
        self._edits: asyncio.Queue[Expired] = asyncio.Queue(EDITS_WAITING)
        self._editors: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Send and sweep until cancelled; ride out Redis failures."""
        sweeping = asyncio.create_task(self.sweeping())
        try:
            await self.sending()
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await self.close()

    async def close(self) -> None:
        """Stop the editors; edits still queued are dropped (the approvals are expired
        in Redis all the same)."""
        editors, self._editors = self._editors, []
        for editor in editors:
            editor.cancel()
        for editor in editors:
            with contextlib.suppress(asyncio.CancelledError):
                await editor

    async def sweeping(self) -> None:
        """A sweep round every SWEEP_EVERY until cancelled; ride out Redis failures."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST
        while True:
            started = loop.time()
            try:
                await self.sweep()
                delay = RETRY_FIRST
            except Unavailable as exc:
                logger.warning("approval sweep: Redis unavailable (%s); again in %.1f s",
                               exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            except Exception:  # never let the sweep die: approvals would never expire
                logger.exception("unexpected error sweeping approvals; again in %.1f s",
                                 delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                continue
            await asyncio.sleep(max(0.0, started + SWEEP_EVERY - loop.time()))

    async def sending(self) -> None:
        """Send until cancelled; ride out Redis failures."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST
        next_claim = next_forget = loop.time()
        while True:
            try:
                if loop.time() >= next_forget:
                    next_forget = loop.time() + FORGET_EVERY
                    await self.queue.ensure_group()
                    await self.queue.forget_gone_consumers()
                entries = []
                if loop.time() >= next_claim:
                    next_claim = loop.time() + CLAIM_EVERY
                    entries = await self.queue.claim(BATCH)
                    if entries:
                        logger.info("claimed %d approvals left pending", len(entries))
                if not entries:
                    entries = await self.queue.read(BATCH, self._block_ms)
                if entries:
                    await asyncio.gather(*(self.handle(entry) for entry in entries))
                delay = RETRY_FIRST
            except Unavailable as exc:
                logger.warning("approval queue unavailable (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
            except Exception:  # never let the sender die: approvals would wait for nothing
                logger.exception("unexpected error sending approvals; again in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)

    async def sweep(self) -> None:
        """One round: queue approvals no bot took by their check time; mark approvals
        whose time is up expired, and queue the edits that take the buttons off their
        messages (a tap would only be told it expired), which go out after."""
        expired = await self.approvals.expire_due()
        dropped = 0
        for one in expired:
            if one.message_id:
                try:
                    self._edits.put_nowait(one)
                except asyncio.QueueFull:
                    dropped += 1
        if dropped:
            logger.warning("%d expired approvals' messages keep their buttons: too many "
                           "edits waiting (a tap is told they expired)", dropped)
        if not self._edits.empty():
            self._start_editors()

    def _start_editors(self) -> None:
        self._editors = [e for e in self._editors if not e.done()]
        while len(self._editors) < EDITORS:
            self._editors.append(asyncio.create_task(self._editing()))

    async def _editing(self) -> None:
        while True:
            expired = await self._edits.get()
            try:
                await self._expired(expired)
            except Exception:  # one bad edit never stops the others
                logger.exception("could not mark an expired approval's message")

    async def _expired(self, expired: Expired) -> None:
        lang = lang_of(expired.language_code)
        decision = Decision(outcome="expired", status="expired",
                            client_name=expired.client_name, state=expired.state)
        reply = outcome_text(lang, decision, expired.text)
        try:
            await self.bot.edit_message_text(
                reply.text, chat_id=expired.user_id, message_id=expired.message_id,
                entities=list(reply.entities),
            )
        except TelegramError as exc:  # deleted, blocked, edited meanwhile: it stays
            logger.info("could not mark an expired approval's message: %s", exc)

    async def handle(self, entry: Entry) -> None:
        """Send one entry's approval, or find there is nothing to send; acknowledge it
        unless a failure that may pass left it for another try."""
        entry_id, user_id, key_hash = entry
        try:
            if user_id and is_key_hash(key_hash) and not await self._send(entry):
                return  # left pending: claimed again after CLAIM_IDLE_MS
            await self.queue.done(entry_id)
        except Unavailable as exc:
            logger.warning("approval %s left pending, Redis is unavailable: %s", entry_id, exc)

    async def _send(self, entry: Entry) -> bool:
        """Whether the entry is handled (sent, undeliverable, or nothing to send)."""
        entry_id, user_id, key_hash = entry
        taken = await self.approvals.take(user_id, key_hash, entry_id)
        if taken.outcome == "busy":
            logger.info("approval for user %d is being sent by another entry; this one waits",
                        user_id)
            return False  # claimed again later: sent by then, or its sender died
        prompt = taken.prompt
        if prompt is None:
            return True
        if taken.again:
            logger.warning("sending an approval to user %d again: an earlier attempt was cut "
                           "short and may have reached Telegram (then the user sees two "
                           "messages; either decides it)", user_id)
        lang = lang_of(prompt.language_code)
        reply = prompt_text(lang, prompt)
        touching = asyncio.create_task(self._touch(entry))
        try:
            message: Message = await self.bot.send_message(
                chat_id=user_id, text=reply.text, entities=list(reply.entities),
                reply_markup=keyboard(lang, prompt),
            )
        except (Forbidden, BadRequest) as exc:
            # blocked, no such chat, or a message Telegram refuses: no retry would help
            found = await self.approvals.undeliverable(user_id, key_hash)
            logger.info("approval for user %d undeliverable (%s)%s", user_id, exc.message,
                        "" if found else "; it was settled meanwhile")
            return True
        except TelegramError as exc:  # Telegram unreachable or busy: try again later
            logger.warning("could not send an approval to user %d (%s); it stays queued",
                           user_id, exc)
            return False
        finally:
            touching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await touching
        await self.approvals.sent(user_id, key_hash, message.message_id)
        logger.info("sent an approval to user %d", user_id)
        return True

    async def _touch(self, entry: Entry) -> None:
        entry_id, user_id, key_hash = entry
        while True:
            await asyncio.sleep(TOUCH_EVERY)
            with contextlib.suppress(Unavailable):
                await self.queue.touch(entry_id)
                await self.approvals.take(user_id, key_hash, entry_id)  # renews the note
