"""Push approvals in the bot: the taps that decide them (`approval_decision`).

The message and its buttons are `approval_texts`; sending queued approvals and the
sweep are `approval_sender.Sender`, a task of every bot process (re-exported here for
the app). A tap decides only for the approval's own user, and the first decision wins;
the bot edits the tapped message and, when the decision was made now from another
message of the same approval (a second message after a send cut short), the message it
noted sending too, so no decided approval keeps live buttons where the bot knows them.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import CallbackQuery, Message, MessageEntity, Update
from telegram import User as TelegramUser
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot_worker import messages
from bot_worker.approval_sender import Sender
from bot_worker.approval_texts import CALLBACKS, outcome_text, private_only_text, unknown_text
from bot_worker.handlers import CALLBACK_ANSWER_MAX, parse_tap
from bot_worker.messages import Reply, lang_of
from shared.approvals import Approvals, Decision, is_key_hash
from shared.store import USER_FIELDS, Unavailable

__all__ = ["APPROVALS", "CALLBACKS", "Sender", "approval_decision", "quote_of"]

logger = logging.getLogger(__name__)

APPROVALS = "approvals"  # bot_data key of the `Approvals`


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
    await _edit_the_noted(context, user.id, query.message, decision, reply)
    logger.info(
        "approval %s by user %d (%s%s)", decision.status, user.id, decision.outcome,
        ", not the number shown" if decision.mismatch else "",
    )


async def _edit_the_noted(
    context: ContextTypes.DEFAULT_TYPE, user_id: int, tapped: object, decision: Decision,
    reply: Reply,
) -> None:
    """A decision made from a message other than the one the bot noted sending (a
    second message of the approval): that one says the outcome too, without buttons."""
    noted = decision.message_id
    if decision.outcome != "decided" or noted is None \
            or (isinstance(tapped, Message) and tapped.message_id == noted):
        return
    try:
        await context.bot.edit_message_text(
            reply.text, chat_id=user_id, message_id=noted, entities=list(reply.entities)
        )
    except TelegramError as exc:  # deleted, edited meanwhile: it stays
        logger.info("could not edit the approval's other message: %s", exc)
