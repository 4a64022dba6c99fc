"""Build the python-telegram-bot Application and run it.

`build_application` wires the handlers and the lifecycle hooks: the Redis
store opens in `post_init` and closes in `post_shutdown`. How updates
arrive is `run`'s business alone (plain polling today), so a Redis-leased
poller or webhook mode can replace it without touching the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeAlias

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    JobQueue,
    MessageHandler,
    filters,
)

from bot_worker import handlers, messages
from shared.logins import Logins
from shared.settings import Settings
from shared.store import Store, Unavailable

logger = logging.getLogger(__name__)

BotApplication: TypeAlias = Application[
    ExtBot[None],
    ContextTypes.DEFAULT_TYPE,
    dict[Any, Any],
    dict[Any, Any],
    dict[Any, Any],
    JobQueue[ContextTypes.DEFAULT_TYPE],
]

SETTINGS = "settings"
PUBLISHER = "username_publisher"
COMMANDS = ("start", "code", "logout", "help")
# retry delays (s) for publishing the username while Redis is unreachable
PUBLISH_RETRY_FIRST = 0.5
PUBLISH_RETRY_MAX = 5.0

# messages people send, not edits, service updates or the bot's own posts
_NEW = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
_PRIVATE = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
_SHARED = (filters.ChatType.GROUPS | filters.ChatType.CHANNEL) & _NEW


def build_application(settings: Settings) -> BotApplication:
    """The bot, ready for `run`: handlers registered, store opened on start."""
    application = (
        Application.builder()
        .token(settings.telegram_bot_token.reveal())
        .base_url(settings.telegram_api_base_url)
        # a second connection for getUpdates: on shutdown PTB confirms the fetched
        # updates with one more call while the long poll may still hold the first
        .get_updates_connection_pool_size(2)
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data[SETTINGS] = settings
    add_handlers(application)
    return application


def add_handlers(application: BotApplication) -> None:
    # in groups, supergroups and channels every command of ours gets the same hint
    application.add_handler(CommandHandler(COMMANDS, handlers.not_private, filters=_SHARED))
    application.add_handler(CommandHandler("start", handlers.start, filters=_PRIVATE))
    application.add_handler(CommandHandler("code", handlers.code, filters=_PRIVATE))
    application.add_handler(CommandHandler("logout", handlers.logout, filters=_PRIVATE))
    application.add_handler(CommandHandler("help", handlers.help_command, filters=_PRIVATE))
    # Approve / Deny under a deep-link login prompt (the handler refuses outside private chats)
    application.add_handler(
        CallbackQueryHandler(handlers.login_decision, pattern=handlers.LOGIN_CALLBACKS)
    )
    # anything else a user says to the bot, unknown commands included
    application.add_handler(MessageHandler(_PRIVATE & filters.TEXT, handlers.text_hint))
    application.add_error_handler(handlers.error)


def run(application: BotApplication) -> None:
    """Serve updates until SIGINT or SIGTERM; `run_polling` owns the loop and signals."""
    application.run_polling(
        allowed_updates=Update.ALL_TYPES,
        drop_pending_updates=False,
        # ride out a Bot API that is still starting (supervisord starts all at once)
        bootstrap_retries=5,
    )


async def _post_init(application: BotApplication) -> None:
    settings: Settings = application.bot_data[SETTINGS]
    store = Store.from_settings(settings)
    application.bot_data[handlers.STORE] = store
    application.bot_data[handlers.LOGINS] = Logins(store)
    await _set_commands(application)
    username = settings.telegram_bot_username or application.bot.username
    logger.info("bot @%s started", application.bot.username)
    application.bot_data[PUBLISHER] = asyncio.create_task(
        _publish_username(store, username), name="publish bot username"
    )


async def _post_shutdown(application: BotApplication) -> None:
    publisher: asyncio.Task[None] | None = application.bot_data.pop(PUBLISHER, None)
    if publisher is not None and not publisher.done():
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    store: Store | None = application.bot_data.pop(handlers.STORE, None)
    if store is not None:  # None when start-up failed before post_init
        await store.close()
        logger.info("bot stopped")


async def _set_commands(application: BotApplication) -> None:
    """The command menu in English (the default) and Russian."""
    bot = application.bot
    try:
        for language_code in (None, "ru"):
            menu = messages.commands(messages.lang_of(language_code))
            await bot.set_my_commands(
                [BotCommand(name, text) for name, text in menu], language_code=language_code
            )
    except TelegramError as exc:  # a menu is a nicety; the bot works without one
        logger.warning("could not set the command menu: %s", exc)


async def _publish_username(store: Store, username: str) -> None:
    """Tell the API which bot deep links point to; keep trying while Redis is down."""
    delay = PUBLISH_RETRY_FIRST
    while True:
        try:
            await store.publish_bot_username(username)
        except Unavailable as exc:
            logger.warning(
                "Redis is unavailable, bot username not published yet (%s); retrying in %.1f s",
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUBLISH_RETRY_MAX)
        else:
            logger.info("published bot username @%s", username)
            return
