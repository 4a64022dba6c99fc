"""The bot's handlers: /start, /code, /logout, /help, deep-link logins and the hints.

Handlers talk to Redis only through `shared.store.Store` (kept in
`bot_data["store"]`) and take every text from `bot_worker.messages`.
`app.py` decides which handler sees which update (private chat or not).
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.error import BadRequest, Forbidden
from telegram.ext import ContextTypes

from bot_worker import messages
from bot_worker.dispatch import handling_errors, key_of, may_pass
from bot_worker.messages import Lang
from shared.logins import MATCH_HIGH, MATCH_LOW, Decision, Logins, Prompt
from shared.store import USER_FIELDS, RateLimited, Store, Unavailable

logger = logging.getLogger(__name__)

STORE = "store"
LOGINS = "logins"
# callback_data of a login prompt's buttons: prefix + the deep-link payload (never the
# request id, which only the API client knows). Approve and Deny: 3 + 22 bytes; a number
# button of an authorization page's request: "lp:<n>:" + payload, 6 + 22; all within
# Telegram's 64
APPROVE, DENY, PICK = "la:", "ld:", "lp:"
LOGIN_CALLBACKS = r"^l[adp]:"
_PICKED = re.compile(r"([0-9]{1,2}):(.*)", re.DOTALL)
_random = secrets.SystemRandom()
# Telegram refuses answerCallbackQuery texts longer than this
CALLBACK_ANSWER_MAX = 200
SEND_MESSAGE = "sendMessage"


def _store(context: ContextTypes.DEFAULT_TYPE) -> Store:
    store: Store = context.bot_data[STORE]
    return store


def _logins(context: ContextTypes.DEFAULT_TYPE) -> Logins:
    logins: Logins = context.bot_data[LOGINS]
    return logins


def _lang(update: Update) -> Lang:
    user = update.effective_user
    return messages.lang_of(user.language_code if user else None)


def _user_record(user: User) -> dict[str, Any]:
    """The Telegram user as the store keeps it (the API's `user` object)."""
    return {name: getattr(user, name) for name in USER_FIELDS}


def _private(update: Update) -> tuple[Message, User, Lang] | None:
    """The message, its sender and their language, if this is a user's message in a
    private chat."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.chat.type != "private":
        return None
    return message, user, messages.lang_of(user.language_code)


async def _issue_code(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    found = _private(update)
    if found is None:
        return
    message, user, lang = found
    try:
        update_key = str(key_of(update, context.bot.id))
        issued = await _store(context).issue_code(_user_record(user), update_key=update_key)
    except RateLimited as exc:
        logger.info("code issue refused for user %d: over the limit", user.id)
        await message.reply_text(messages.rate_limited(lang, exc.retry_after))
        return
    except Unavailable as exc:
        logger.warning("cannot issue a code, Redis is unavailable: %s", exc)
        await message.reply_text(messages.unavailable(lang))
        return
    if issued is None:
        # handled again after a crash, but the user has a newer code by now
        logger.info("update %d: its code was replaced since; not sent again", update.update_id)
        return
    reply = messages.code_issued(lang, issued.code, issued.ttl_seconds)
    await _send_code(context, message.chat_id, reply, messages.copy_button(lang), issued.code)
    logger.info("issued a code to user %d", user.id)


async def _send_code(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, reply: messages.Reply, button: str,
    code: str,
) -> None:
    """The code's reply with its Copy button: the sendMessage `message.reply_text` sends
    in a private chat (chat_id, text, entities, an inline keyboard with one copy_text
    button), built as plain JSON, and the Message Telegram echoes back is never built.

    The busiest reply, and the one with the largest echo (entities, keyboard): building
    the objects and the echoed Message was about a tenth of the bot's CPU per code.
    `Bot._post` is the step every python-telegram-bot method takes to the rate limiter
    (`SharedRateLimiter`, keyed on "sendMessage" and the chat) and the request, so the
    same errors come out (RetryAfter, Forbidden, NetworkError...); the public
    `do_api_request` goes the same way but warns for a method the library knows.
    """
    data: dict[str, Any] = {
        "chat_id": chat_id,
        "text": reply.text,
        "entities": [entity.to_dict() for entity in reply.entities],
        "reply_markup": {"inline_keyboard": [[{"text": button, "copy_text": {"text": code}}]]},
    }
    await context.bot._post(SEND_MESSAGE, data)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/start` issues a code; `/start <payload>` is a deep-link login."""
    if context.args:
        await login_link(update, context)
        return
    await _issue_code(update, context)


async def code(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/code`: a new login code, voiding the previous one."""
    await _issue_code(update, context)


async def login_link(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/start <payload>`: ask the user to approve or deny that deep-link login."""
    found = _private(update)
    if found is None:
        return
    message, user, lang = found
    payload = context.args[0] if context.args else ""
    try:
        prompt = await _logins(context).prompt(payload)
    except Unavailable as exc:
        logger.warning("cannot look up a login link, Redis is unavailable: %s", exc)
        await message.reply_text(messages.unavailable(lang))
        return
    if prompt is None:
        await message.reply_text(messages.unknown_login_link(lang))
        return
    if prompt.status != "pending":
        await message.reply_text(messages.login_already_decided(lang, prompt.status == "approved"))
        return
    text, keyboard = _login_prompt(lang, payload, prompt)
    await message.reply_text(text, reply_markup=keyboard)
    logger.info("asked user %d to approve a login", user.id)


def _login_prompt(lang: Lang, payload: str, prompt: Prompt) -> tuple[str, InlineKeyboardMarkup]:
    """The question and its buttons: Approve and Deny; or, for an authorization page's
    request, three numbers to pick the page's one from, and Deny below them."""
    deny = InlineKeyboardButton(messages.deny_button(lang), callback_data=DENY + payload)
    if prompt.match is None:
        approve = InlineKeyboardButton(
            messages.approve_button(lang), callback_data=APPROVE + payload
        )
        return messages.login_prompt(lang, prompt.client_name), InlineKeyboardMarkup(
            [[approve, deny]]
        )
    numbers = [
        InlineKeyboardButton(str(n), callback_data=f"{PICK}{n}:{payload}")
        for n in match_choices(prompt.match)
    ]
    text = messages.authorization_prompt(lang, prompt.client_name, prompt.host)
    return text, InlineKeyboardMarkup([numbers, [deny]])


def match_choices(match: int) -> list[int]:
    """The three numbers offered for `match`: it and two distinct decoys from the same
    range, in a random order. From `secrets`, so nothing about the page's number can be
    told from the decoys or the position."""
    choices = _random.sample([n for n in range(MATCH_LOW, MATCH_HIGH + 1) if n != match], 2)
    choices.insert(secrets.randbelow(3), match)
    return choices


@dataclass(frozen=True)
class Tap:
    """A prompt button's callback data read back."""

    approve: bool
    pick: int | None  # the number button's number
    payload: str


def parse_tap(data: str) -> Tap | None:
    """What a button says, or None for a number button that is not one of ours."""
    if data.startswith(PICK):
        picked = _PICKED.fullmatch(data[len(PICK) :])
        if picked is None:
            return None
        return Tap(approve=True, pick=int(picked[1]), payload=picked[2])
    return Tap(approve=data.startswith(APPROVE), pick=None, payload=data[len(APPROVE) :])


def _outcome(lang: Lang, decision: Decision | None) -> str:
    if decision is None:
        return messages.login_expired(lang)
    approved = decision.status == "approved"
    if decision.outcome == "already":
        return messages.login_already_decided(lang, approved)
    if decision.mismatch:
        return messages.login_mismatch(lang)
    if approved:
        return messages.logged_in(lang, decision.client_name, decision.host)
    return messages.login_denied(lang, decision.client_name, decision.host)


async def login_decision(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A tap on Approve, Deny or a number: the first decision counts; the message says
    what happened. A number other than the page's denies (`Logins.decide`)."""
    query: CallbackQuery | None = update.callback_query
    if query is None or query.data is None:
        return
    user = query.from_user
    lang = messages.lang_of(user.language_code)
    if query.message is None or query.message.chat.type != "private":
        await query.answer(messages.login_private_only(lang, context.bot.username), show_alert=True)
        return
    tap = parse_tap(query.data)
    if tap is None:  # not a button the bot made: decide nothing, change nothing
        await query.answer(messages.login_expired(lang))
        return
    try:
        decision = await _logins(context).decide(
            tap.payload, _user_record(user), tap.approve, tap.pick
        )
    except Unavailable as exc:
        logger.warning("cannot decide a login, Redis is unavailable: %s", exc)
        await query.answer(messages.unavailable(lang), show_alert=True)
        return
    text = _outcome(lang, decision)
    try:
        await query.answer(_short(text))
    except BadRequest as exc:  # a tap handled again: its query was answered the first time
        logger.info("callback query already answered: %s", exc)
    try:
        await query.edit_message_text(text)  # no reply_markup: the buttons go
    except BadRequest as exc:  # a redelivered tap finds the message already edited
        if "not modified" not in str(exc).lower():
            raise
    if decision is not None:
        logger.info(
            "login %s by user %d (%s%s)",
            decision.status,
            user.id,
            "decided" if decision.outcome == "decided" else "too late",
            ", not the page's number" if decision.mismatch else "",
        )


def _short(text: str) -> str:
    """A callback answer within Telegram's 200 characters (a long client name)."""
    return text if len(text) <= CALLBACK_ANSWER_MAX else text[: CALLBACK_ANSWER_MAX - 1] + "…"


async def logout(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/logout`: end every access token of the user and say how many."""
    found = _private(update)
    if found is None:
        return
    message, user, lang = found
    try:
        ended = await _store(context).revoke_user(user.id)
    except Unavailable as exc:
        logger.warning("cannot log user %d out, Redis is unavailable: %s", user.id, exc)
        await message.reply_text(messages.unavailable(lang))
        return
    logger.info("user %d logged out: %d sessions ended", user.id, ended)
    await message.reply_text(messages.logged_out(lang, ended))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/help`: what the bot does and the rules of codes."""
    found = _private(update)
    if found is None:
        return
    message, _, lang = found
    ttl = _store(context).settings.code_ttl_seconds
    await message.reply_text(messages.help_text(lang, ttl))


async def text_hint(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else said in a private chat: point at /code."""
    found = _private(update)
    if found is None:
        return
    message, _, lang = found
    await message.reply_text(messages.text_hint(lang))


async def not_private(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command in a group, supergroup or channel: never a code, only a way to the bot."""
    message = update.effective_message
    if message is None:
        return
    lang = _lang(update)
    username = context.bot.username
    button = InlineKeyboardButton(
        messages.open_private_chat_button(lang), url=f"https://t.me/{username}"
    )
    is_login_link = bool(context.args) and (message.text or "").startswith("/start")
    text = (messages.login_private_only if is_login_link else messages.private_only)(
        lang, username
    )
    await message.reply_text(text, reply_markup=InlineKeyboardMarkup([[button]]))


async def error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every error a handler did not handle; the bot keeps running.

    The dispatcher learns of it too: an error that may pass (Telegram
    unreachable) has the update handled again later, so no reply now.
    A user who blocked the bot (403) ends that conversation quietly.
    """
    errors = handling_errors.get()
    if errors is not None and context.error is not None:
        errors.append(context.error)
    if isinstance(context.error, Forbidden):
        chat = update.effective_chat if isinstance(update, Update) else None
        logger.info(
            "chat %s: Telegram refused the reply (%s); nothing more to send",
            chat.id if chat else "?", context.error.message,
        )
        return
    if context.error is not None and may_pass(context.error):
        logger.warning("Telegram call failed, the update will be handled again: %s",
                       context.error)
        return
    logger.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        if update.effective_chat is not None and update.effective_chat.type == "private":
            try:
                await update.effective_message.reply_text(messages.unavailable(_lang(update)))
            except Exception:  # the error may well be Telegram itself being unreachable
                logger.warning("could not tell the user about the error", exc_info=True)
