# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""Push approvals in the bot: sending the queued ones, and the taps that decide them.

`Sender.run` is a task of every bot process (polling or webhook): it reads the
approval queue as one consumer of its group (`shared.approvals.ApprovalQueue`),
sends each approval to its user through the Application's bot (so the shared flood
limiter holds), notes the message, and acknowledges the entry. Telegram's 403 (the
user blocked the bot) or 400 (no such chat, or any message Telegram refuses) makes the
approval `undeliverable` at once, which wakes the client's waiting poll. A failure that
may pass (Telegram unreachable) leaves the entry pending: this or another process
claims it again after `CLAIM_IDLE_MS`, until the approval expires. A process killed
mid-send leaves it to the others the same way.

The same task sweeps: every `SWEEP_EVERY` it marks the approvals whose time is up
expired (`Approvals.expire_due`) and edits their messages to say so, without buttons.

The message names the client and quotes the action text as a blockquote entity: the
text is sent as text with entities, never parsed as markup, so nothing in it can
format, link or pretend to be the bot's own words outside the quote. Buttons carry the
approval's key hash (never its id): `aa:`/`ad:` Approve and Deny, `ap:<n>:` a number
of a numbered approval; `handlers.parse_tap` reads them as it reads a login's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
)
from telegram import User as TelegramUser
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import ContextTypes

from bot_worker import messages
from bot_worker.handlers import CALLBACK_ANSWER_MAX, match_choices, parse_tap
from bot_worker.messages import Lang, Reply, lang_of
from shared.approvals import (
    ApprovalQueue,
    Approvals,
    Decision,
    Entry,
    Expired,
    Prompt,
    is_key_hash,
)
from shared.store import USER_FIELDS, Unavailable

logger = logging.getLogger(__name__)

APPROVALS = "approvals"  # bot_data key of the `Approvals`
APPROVE, DENY, PICK = "aa:", "ad:", "ap:"  # + the key hash (32): within Telegram's 64
CALLBACKS = r"^a[adp]:"
# entries read or claimed at a time
BATCH = 16
# a sender that cannot reach Redis tries again after this long (s), doubling to the cap
RETRY_FIRST, RETRY_CAP = 0.5, 5.0
# how often pending entries of dead processes are looked for (s)
CLAIM_EVERY = 5.0
# how often a slow send says it is still working on its entry (s)
TOUCH_EVERY = 5.0
# how often consumers of processes long gone are forgotten (s)
FORGET_EVERY = 600.0
# how often approvals whose time is up are marked expired (s)
SWEEP_EVERY = 2.0


# -- texts ------------------------------------------------------------------------------


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _quoted(head: str, quote: str, tail: str) -> Reply:
    """`head`, then `quote` as a blockquote (its own lines), then `tail`."""
    text = f"{head}\n\n{quote}"
    entity = MessageEntity(
        MessageEntity.BLOCKQUOTE, offset=_utf16(head) + 2, length=_utf16(quote)
    )
    return Reply(text + (f"\n\n{tail}" if tail else ""), (entity,))


def _who(lang: Lang, client: str) -> str:
    if lang == "ru":
        return f"«{client}»" if client else "Сайт"
    return client or "A website"


def prompt_text(lang: Lang, prompt: Prompt) -> Reply:
    who = _who(lang, prompt.client_name)
    if lang == "ru":
        head = f"{who} просит подтвердить действие:"
        tail = (
            f"Выберите число, которое показывает {who}. Если вы ничего не делали сейчас "
            "или не видите числа, нажмите «Отклонить»."
            if prompt.match is not None
            else "Подтверждайте, только если вы сами делаете это прямо сейчас."
        )
    else:
        head = f"{who} asks you to confirm:"
        tail = (
            f"Pick the number {who} shows you. If you are not doing this right now, or "
            "see no number, tap Deny."
            if prompt.match is not None
            else "Approve only if you are doing this yourself right now."
        )
    return _quoted(head, prompt.text, tail)


def outcome_text(lang: Lang, decision: Decision, quote: str) -> Reply:
    """What the message says once tapped: what happened, and the action it was about."""
    who = _who(lang, decision.client_name)
    approved = decision.status == "approved"
    if lang == "ru":
        if decision.outcome == "expired":
            head = "Запрос устарел, ничего не подтверждено:"
        elif decision.outcome == "already":
            done = "подтверждён" if approved else "отклонён"
            head = f"Этот запрос уже {done} — решение принято раньше:"
        elif decision.mismatch:
            head = f"Это не то число, которое показывает {who}, поэтому запрос отклонён:"
        else:
            head = f"Вы {'подтвердили' if approved else 'отклонили'} запрос {who}:"
    elif decision.outcome == "expired":
        head = "This request has expired; nothing was approved:"
    elif decision.outcome == "already":
        head = (f"This request was already {'approved' if approved else 'denied'}; "
                "only the first answer counts:")
    elif decision.mismatch:
        head = f"That was not the number {who} shows, so this was denied:"
    else:
        head = f"You {'approved' if approved else 'denied'} this for {who}:"
    if not quote:
        return Reply(head.rstrip(":") + ".")
    return _quoted(head, quote, "")


def unknown_text(lang: Lang) -> str:
    if lang == "ru":
        return "Этот запрос неизвестен или устарел."
    return "This request is unknown or has expired."


def private_only_text(lang: Lang) -> str:
    if lang == "ru":
        return "Запросы подтверждаются только в личном чате с ботом."
    return "Requests are only approved in your private chat with the bot."


def _keyboard(lang: Lang, prompt: Prompt) -> InlineKeyboardMarkup:
    deny = InlineKeyboardButton(messages.deny_button(lang), callback_data=DENY + prompt.key_hash)
    if prompt.match is None:
        approve = InlineKeyboardButton(
            messages.approve_button(lang), callback_data=APPROVE + prompt.key_hash
        )
        return InlineKeyboardMarkup([[approve, deny]])
    numbers = [
        InlineKeyboardButton(str(n), callback_data=f"{PICK}{n}:{prompt.key_hash}")
        for n in match_choices(prompt.match)
    ]
    return InlineKeyboardMarkup([numbers, [deny]])


# -- sending ------------------------------------------------------------------------------


class Sender:
    """Sends queued approvals as one consumer of the queue's group."""

    def __init__(self, bot: Any, approvals: Approvals, queue: ApprovalQueue) -> None:
        self.bot = bot
        self.approvals = approvals
        self.queue = queue
        self._block_ms = max(100, min(2000, int(approvals.settings.redis_timeout * 500)))

    async def run(self) -> None:
        """Send until cancelled; ride out Redis failures."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST
        next_claim = next_forget = next_sweep = loop.time()
        while True:
            try:
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_EVERY
                    await self.sweep()
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
        """Mark approvals whose time is up expired, and take the buttons off their
        messages (a tap would only be told it expired)."""
        expired = await self.approvals.expire_due()
        await asyncio.gather(*(self._expired(e) for e in expired if e.message_id))

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
        prompt = await self.approvals.prompt(user_id, key_hash)
        if prompt is None:
            return True
        lang = lang_of(prompt.language_code)
        reply = prompt_text(lang, prompt)
        touching = asyncio.create_task(self._touch(entry_id))
        try:
            message: Message = await self.bot.send_message(
                chat_id=user_id, text=reply.text, entities=list(reply.entities),
                reply_markup=_keyboard(lang, prompt),
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

    async def _touch(self, entry_id: str) -> None:
        while True:
            await asyncio.sleep(TOUCH_EVERY)
            with contextlib.suppress(Unavailable):
                await self.queue.touch(entry_id)


# -- taps ---------------------------------------------------------------------------------


def _approvals(context: ContextTypes.DEFAULT_TYPE) -> Approvals:
    approvals: Approvals = context.bot_data[APPROVALS]
    return approvals


def _user_record(user: TelegramUser) -> dict[str, Any]:
    return {name: getattr(user, name) for name in USER_FIELDS}


def quote_of(message: object) -> str:
    """The action text the approval message quotes (its blockquote), or ""."""
    if not isinstance(message, Message):
        return ""
    for entity in message.entities:
        if entity.type == MessageEntity.BLOCKQUOTE:
            return message.parse_entity(entity)
    return ""


def _short(text: str) -> str:
    return text if len(text) <= CALLBACK_ANSWER_MAX else text[: CALLBACK_ANSWER_MAX - 1] + "…"


async def approval_decision(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A tap on Approve, Deny or a number under an approval: the first decision counts,
    and only the approval's own user decides (someone else's tap changes nothing)."""
    query: CallbackQuery | None = update.callback_query
    if query is None or query.data is None:
        return
    user = query.from_user
    lang = lang_of(user.language_code)
    if query.message is None or query.message.chat.type != "private":
        await query.answer(private_only_text(lang), show_alert=True)
        return
    # the same three shapes as a login prompt's buttons, another first letter
    tap = parse_tap("l" + query.data[1:])
    if tap is None or not is_key_hash(tap.payload):
        await query.answer(unknown_text(lang))
        return
    try:
        decision = await _approvals(context).decide(
            _user_record(user), tap.payload, tap.approve, tap.pick
        )
    except Unavailable as exc:
        logger.warning("cannot decide an approval, Redis is unavailable: %s", exc)
        await query.answer(messages.unavailable(lang), show_alert=True)
        return
    if decision is None:  # not this user's (a forwarded message), or gone
        await query.answer(unknown_text(lang))
        return
    reply = outcome_text(lang, decision, quote_of(query.message))
    try:
        await query.answer(_short(reply.text))
    except BadRequest as exc:  # a redelivered tap: answered the first time
        logger.info("callback query already answered: %s", exc)
    try:
        await query.edit_message_text(reply.text, entities=list(reply.entities))
    except BadRequest as exc:  # a redelivered tap finds the message already edited
        if "not modified" not in str(exc).lower():
            raise
    logger.info(
        "approval %s by user %d (%s%s)", decision.status, user.id, decision.outcome,
        ", not the number shown" if decision.mismatch else "",
    )
