"""Build the python-telegram-bot Application and run it, polling or as a webhook.

`build_application` wires the handlers and a rate limiter that holds
Telegram's flood limits across processes. `run` owns the event loop and the
signals: it initialises the Application, opens Redis, and then either polls
under the Redis lease (`polling.py`) or serves WEBHOOK_URL (`webhook.py`);
either way every update goes through `dispatch.Dispatcher`, which confirms an
update to Telegram only once it was handled. SIGTERM or SIGINT stops taking
updates, lets those in hand finish (`STOP_GRACE`), and leaves the rest to
Telegram and the next process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Iterator
from typing import Any, TypeAlias

import uvicorn
from telegram import BotCommand
from telegram.error import NetworkError, TelegramError
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

from bot_worker import approvals, handlers, messages, sessions
from bot_worker.dispatch import Dispatcher
from bot_worker.limiter import SharedRateLimiter
from bot_worker.polling import Poller, UpdatesRequest
from bot_worker.webhook import create_webhook_app, ensure_webhook, listening_socket
from shared.approvals import ApprovalQueue, Approvals
from shared.flood import FloodControl
from shared.lease import Leases, instance_name
from shared.ledger import HEARTBEAT_SECONDS, UpdateLedger
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
UPDATES_REQUEST = "updates request"
COMMANDS = ("start", "code", "logout", "sessions", "help")
# retry delays (s) for publishing the username while Redis is unreachable
PUBLISH_RETRY_FIRST = 0.5
PUBLISH_RETRY_MAX = 5.0
# tries, and the first delay (s, doubling), to reach a Bot API that is still starting
START_TRIES, START_RETRY_FIRST = 6, 0.5
# seconds the updates in hand get to finish after a stop signal (supervisord waits 10)
STOP_GRACE = 8.0

# messages people send, not edits, service updates or the bot's own posts
_NEW = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
_PRIVATE = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE
_SHARED = (filters.ChatType.GROUPS | filters.ChatType.CHANNEL) & _NEW


# connections sending replies: Telegram takes 30 messages a second from a bot, so at
# 0.2 s a send, 6 in flight keep up; more only cost, because the HTTP pool checks each
# idle connection for every request it places
SEND_CONNECTIONS = 8


def build_application(settings: Settings) -> BotApplication:
    """The bot, ready for `run`: handlers registered, store opened on start."""
    updates_request = UpdatesRequest(connection_pool_size=2)
    application = (
        Application.builder()
        .token(settings.telegram_bot_token.reveal())
        .base_url(settings.telegram_api_base_url)
        # updates arrive through `run`, never python-telegram-bot's own Updater, which
        # confirms a fetched batch to Telegram before handling it
        .updater(None)
        .rate_limiter(SharedRateLimiter())
        # replies go out side by side (each chat's in order, see dispatch.py) on
        # SEND_CONNECTIONS connections
        .connection_pool_size(SEND_CONNECTIONS)
        .pool_timeout(10.0)
        # a second connection for getUpdates: the final confirming call on a stop
        # may overlap the long poll being cancelled
        .get_updates_request(updates_request)
        .build()
    )
    application.bot_data[SETTINGS] = settings
    application.bot_data[UPDATES_REQUEST] = updates_request
    add_handlers(application)
    return application


def add_handlers(application: BotApplication) -> None:
    # in groups, supergroups and channels every command of ours gets the same hint
    application.add_handler(CommandHandler(COMMANDS, handlers.not_private, filters=_SHARED))
    application.add_handler(CommandHandler("start", handlers.start, filters=_PRIVATE))
    application.add_handler(CommandHandler("code", handlers.code, filters=_PRIVATE))
    application.add_handler(CommandHandler("logout", handlers.logout, filters=_PRIVATE))
    application.add_handler(CommandHandler("help", handlers.help_command, filters=_PRIVATE))
    application.add_handler(
        CommandHandler("sessions", sessions.list_sessions, filters=_PRIVATE)
    )
    # End and the page buttons under a /sessions list
    application.add_handler(
        CallbackQueryHandler(sessions.session_button, pattern=sessions.SESSIONS_CALLBACKS)
    )
    # Approve / Deny / a number under a push approval (refused outside private chats)
    application.add_handler(
        CallbackQueryHandler(approvals.approval_decision, pattern=approvals.CALLBACKS)
    )
    # Approve / Deny under a deep-link login prompt (the handler refuses outside private chats)
    application.add_handler(
        CallbackQueryHandler(handlers.login_decision, pattern=handlers.LOGIN_CALLBACKS)
    )
    # anything else a user says to the bot, unknown commands included
    application.add_handler(MessageHandler(_PRIVATE & filters.TEXT, handlers.text_hint))
    application.add_error_handler(handlers.error)


def run(application: BotApplication, fd: int | None = None) -> None:
    """Serve updates until SIGINT or SIGTERM; this function owns the loop and the signals."""
    asyncio.run(_serve(application, fd))


class Runtime:
    """What one bot process holds open while it runs."""

    def __init__(
        self, application: BotApplication, settings: Settings, stop: asyncio.Event
    ) -> None:
        self.bot = application.bot
        bot_id = application.bot.id
        instance = instance_name()
        self.store = Store.from_settings(settings)
        self.leases = Leases(self.store.redis, bot_id, instance)
        self.ledger = UpdateLedger(self.store.redis, bot_id, instance)
        self.dispatcher = Dispatcher(application.process_update, self.ledger, stop)
        limiter = application.bot.rate_limiter
        assert isinstance(limiter, SharedRateLimiter)
        limiter.flood = FloodControl(self.store.redis, bot_id, settings.bot_send_rate)
        limiter.health = self.dispatcher.health
        self.dispatcher.health.seconds = 2 * settings.redis_timeout
        application.bot_data[handlers.STORE] = self.store
        application.bot_data[handlers.LOGINS] = Logins(self.store)
        self.approvals = application.bot_data[approvals.APPROVALS] = Approvals(
            self.store.redis, settings
        )
        self.approval_queue = ApprovalQueue(self.store.redis, instance)
        self.tasks: list[asyncio.Task[None]] = []

    def background(self, job: Awaitable[None], name: str) -> None:
        self.tasks.append(asyncio.ensure_future(job))
        self.tasks[-1].set_name(name)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()


async def _serve(application: BotApplication, fd: int | None) -> None:
    settings: Settings = application.bot_data[SETTINGS]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # a stop signal during start-up (a Bot API or Redis that does not answer) ends it
    if not await _unless_stopped(_initialize(application), stop):
        logger.info("stopped while starting")
        return
    runtime = Runtime(application, settings, stop)
    try:
        if await _unless_stopped(_start(application, settings, runtime), stop):
            logger.info("bot @%s started (%s)", application.bot.username, settings.bot_mode)
            if settings.bot_mode == "webhook":
                runtime.background(
                    ensure_webhook(settings, application.bot, runtime.leases, stop),
                    "set webhook",
                )
                await _serve_webhook(settings, application, runtime.dispatcher, fd, stop)
            else:
                poller = Poller(application.bot, runtime.dispatcher, runtime.leases,
                                application.bot_data[UPDATES_REQUEST])
                await _unless_stopped(poller.run(stop), stop, grace=STOP_GRACE)
    finally:
        logger.info("Application is stopping")
        await runtime.close()
        if application.running:
            await application.stop()
        await application.shutdown()
        logger.info("bot stopped")


async def _start(application: BotApplication, settings: Settings, runtime: Runtime) -> None:
    await application.start()
    await _beat_once(runtime.ledger)
    runtime.background(_heartbeat(runtime.ledger), "heartbeat")
    await _set_commands(application)
    username = settings.telegram_bot_username or application.bot.username
    runtime.background(_publish_username(runtime.store, username), "publish username")
    sender = approvals.Sender(application.bot, runtime.approvals, runtime.approval_queue)
    runtime.background(sender.run(), "send approvals")


async def _until_done_or_stopped(task: asyncio.Future[None], stop: asyncio.Event) -> None:
    stopped: asyncio.Future[None] = asyncio.ensure_future(_set(stop))
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()


async def _set(event: asyncio.Event) -> None:
    await event.wait()


async def _unless_stopped(
    work: Awaitable[None], stop: asyncio.Event, grace: float = 0.0
) -> bool:
    """Run `work` to its end; once `stop` is set it gets `grace` seconds more, then is
    cancelled. Whether it ran to its end (its errors are the caller's)."""
    task = asyncio.ensure_future(work)
    await _until_done_or_stopped(task, stop)
    if not task.done() and grace > 0:
        await asyncio.wait({task}, timeout=grace)
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _initialize(application: BotApplication) -> None:
    """getMe and the rest of python-telegram-bot's start-up; ride out a Bot API that is
    still starting (supervisord starts everything at once)."""
    delay = START_RETRY_FIRST
    for attempt in range(START_TRIES):
        try:
            await application.initialize()
            return
        except NetworkError as exc:
            if attempt == START_TRIES - 1:
                raise
            logger.warning("Bot API not reachable yet (%s); again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay *= 2


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling: `run` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_webhook(
    settings: Settings,
    application: BotApplication,
    dispatcher: Dispatcher,
    fd: int | None,
    stop: asyncio.Event,
) -> None:
    app = create_webhook_app(settings, application.bot, dispatcher)
    sock = listening_socket(settings, fd)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=int(STOP_GRACE),
    )
    server = _Uvicorn(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="webhook server")
    await _until_done_or_stopped(serving, stop)
    server.should_exit = True  # stop accepting; requests in hand finish (their updates)
    await serving
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (e.g. the port is taken)


async def _beat_once(ledger: UpdateLedger) -> None:
    with contextlib.suppress(Unavailable):
        await ledger.heartbeat()


async def _heartbeat(ledger: UpdateLedger) -> None:
    """Keep this process's claims on updates alive; they lapse soon after it dies."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            await ledger.heartbeat()
        except Unavailable as exc:
            logger.warning("heartbeat not recorded, Redis is unavailable: %s", exc)


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
            await store.warn_if_evicting()
            return
