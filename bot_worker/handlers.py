"""The bot's handlers: /start, /code, /logout, /help, and the hints around them.

Handlers talk to Redis only through `shared.store.Store` (kept in
`bot_data["store"]`) and take every text from `bot_worker.messages`.
`app.py` decides which handler sees which update (private chat or not).
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import (
    CopyTextButton,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.ext import ContextTypes

from bot_worker import messages
from bot_worker.messages import Lang
from shared.store import RateLimited, Store, Unavailable

logger = logging.getLogger(__name__)

STORE = "store"


def _store(context: ContextTypes.DEFAULT_TYPE) -> Store:
    store: Store = context.bot_data[STORE]
    return store


def _lang(update: Update) -> Lang:
    user = update.effective_user
    return messages.lang_of(user.language_code if user else None)


def _user_record(user: User) -> dict[str, Any]:
    """The Telegram user as the store keeps it (the API's `user` object)."""
    return {
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "language_code": user.language_code,
    }


def _private(update: Update) -> tuple[Message, User] | None:
    """The message and its sender, if this is a user's message in a private chat."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.chat.type != "private":
        return None
    return message, user


async def _issue_code(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    found = _private(update)
    if found is None:
        return
    message, user = found
    lang = messages.lang_of(user.language_code)
    try:
        issued = await _store(context).issue_code(_user_record(user), update_id=update.update_id)
    except RateLimited as exc:
        logger.info("code issue refused for user %d: over the limit", user.id)
        await message.reply_text(messages.rate_limited(lang, exc.retry_after))
        return
    except Unavailable as exc:
        logger.warning("cannot issue a code, Redis is unavailable: %s", exc)
        await message.reply_text(messages.unavailable(lang))
        return
    if issued is None:
        logger.info("update %d was already handled; not issuing a second code", update.update_id)
        return
    reply = messages.code_issued(lang, issued.code, issued.ttl_seconds)
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    messages.copy_button(lang), copy_text=CopyTextButton(issued.code)
                )
            ]
        ]
    )
    await message.reply_text(reply.text, entities=reply.entities, reply_markup=keyboard)
    logger.info("issued a code to user %d", user.id)


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
    """`/start <payload>`: deep-link logins are not served yet, so every link is unknown."""
    found = _private(update)
    if found is None:
        return
    message, user = found
    await message.reply_text(messages.unknown_login_link(messages.lang_of(user.language_code)))


async def logout(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/logout`: end every access token of the user and say how many."""
    found = _private(update)
    if found is None:
        return
    message, user = found
    lang = messages.lang_of(user.language_code)
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
    message, user = found
    ttl = _store(context).settings.code_ttl_seconds
    await message.reply_text(messages.help_text(messages.lang_of(user.language_code), ttl))


async def text_hint(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else said in a private chat: point at /code."""
    found = _private(update)
    if found is None:
        return
    message, user = found
    await message.reply_text(messages.text_hint(messages.lang_of(user.language_code)))


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
    await message.reply_text(
        messages.private_only(lang, username), reply_markup=InlineKeyboardMarkup([[button]])
    )


async def error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every error a handler did not handle; the bot keeps running."""
    logger.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        if update.effective_chat is not None and update.effective_chat.type == "private":
            try:
                await update.effective_message.reply_text(messages.unavailable(_lang(update)))
            except Exception:  # the error may well be Telegram itself being unreachable
                logger.warning("could not tell the user about the error", exc_info=True)
