"""Webhook mode: a Starlette app under uvicorn receives updates and feeds the Application.

Every bot process serves the path of WEBHOOK_URL (under supervisord they share
one listening socket, as the API processes do). An update is answered 200
only once it was handled, so Telegram's retry covers a crash; 503 asks for
that retry when handling failed for a reason that may pass. A request
without the right `X-Telegram-Bot-Api-Secret-Token` gets 403; a body that
is not an Update, 400.

`ensure_webhook` keeps Telegram posting here: every `CHECK_SECONDS` one
process of the fleet (whoever takes the check's lock in Redis) compares
getWebhookInfo and the record of what was set with this configuration, and
calls setWebhook only when they differ: once at the first start, and again
only if the webhook was lost (a poller with the same token deleted it, the
Bot API forgot it) or the configuration changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot, Update
from telegram.error import TelegramError

from bot_worker.dispatch import Dispatcher
from bot_worker.polling import ALLOWED_UPDATES
from shared.lease import Leases
from shared.settings import Settings
from shared.store import Unavailable
from shared.waiting import wait_set

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's updates are far smaller; anything larger is not from Telegram
MAX_BODY = 1 << 20
# parallel deliveries Telegram may make (setWebhook's max_connections)
MAX_CONNECTIONS = 40
# seconds between checks of the webhook by one process of the fleet
CHECK_SECONDS = 20.0
# seconds between tries while Redis or the Bot API fails the check
SET_RETRY_SECONDS = 2.0


class ListenError(Exception):
    """BOT_HOST:BOT_PORT cannot be listened on (taken, not an address of this host)."""


def listening_socket(settings: Settings, fd: int | None) -> socket.socket:
    """The socket to serve on: the inherited one (`--fd`), else BOT_HOST:BOT_PORT bound
    here, so a taken port is one clear error rather than uvicorn exiting mid-loop."""
    if fd is not None:
        return socket.socket(fileno=fd)
    host = settings.bot_host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, settings.bot_port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {settings.bot_host}:{settings.bot_port}: "
                          f"{exc.strerror or exc}") from None
    return sock


def _error(status: int, error: str, message: str) -> Response:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def create_webhook_app(settings: Settings, bot: Bot, dispatcher: Dispatcher) -> Starlette:
    """The app serving WEBHOOK_URL's path."""
    path = urlsplit(settings.webhook_url).path or "/"
    secret = settings.webhook_secret.reveal().encode()

    async def receive(request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, secret):
            return _error(403, "forbidden", f"wrong or missing {SECRET_HEADER}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, "too_large", "an update is at most 1 MiB")
        found = _update_of(body, bot)
        if found is None:
            return _error(400, "invalid_update", "the body must be a Telegram Update")
        update, content = found
        if await dispatcher.handle(update, content):
            return Response(status_code=200)
        return _error(503, "retry", "not handled yet; send it again")

    return Starlette(routes=[Route(path, receive, methods=["POST"])])


def _update_of(body: bytes, bot: Bot) -> tuple[Update, dict[str, Any]] | None:
    """The Update in a request body and the JSON object it came as, or None for anything
    else (the secret was right, so this is Telegram or someone holding the secret: never
    a 500 either way)."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or type(data.get("update_id")) is not int:
            return None
        update = Update.de_json(data, bot)
        update.to_dict()  # one python-telegram-bot cannot render back is malformed: refused here
    except Exception as exc:  # any malformed field, however it fails
        logger.warning("webhook: not an update (%s)", exc.__class__.__name__)
        return None
    return update, data


def webhook_digest(settings: Settings) -> str:
    """What identifies one webhook configuration (never the secret itself)."""
    parts = [
        settings.webhook_url,
        hashlib.sha256(settings.webhook_secret.reveal().encode()).hexdigest(),
        ",".join(ALLOWED_UPDATES),
        str(MAX_CONNECTIONS),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


async def ensure_webhook(
    settings: Settings, bot: Bot, leases: Leases, stop: asyncio.Event
) -> None:
    """Keep Telegram posting updates to WEBHOOK_URL (see the module's rules)."""
    digest = webhook_digest(settings)
    while not stop.is_set():
        wait = CHECK_SECONDS
        try:
            if await leases.lock_webhook(int(CHECK_SECONDS * 1000)):
                await _check_webhook(settings, bot, leases, digest)
        except (Unavailable, TelegramError) as exc:
            logger.warning("could not check the webhook yet: %s", exc)
            wait = SET_RETRY_SECONDS
            with contextlib.suppress(Unavailable):
                await leases.unlock_webhook()
        await wait_set(stop, wait)


async def _check_webhook(settings: Settings, bot: Bot, leases: Leases, digest: str) -> None:
    info = await bot.get_webhook_info()
    if (
        await leases.webhook_set() == digest
        and info.url == settings.webhook_url
        and sorted(info.allowed_updates or ()) == sorted(ALLOWED_UPDATES)
        and info.max_connections == MAX_CONNECTIONS
    ):
        return
    await bot.set_webhook(
        settings.webhook_url,
        secret_token=settings.webhook_secret.reveal(),
        allowed_updates=ALLOWED_UPDATES,
        max_connections=MAX_CONNECTIONS,
    )
    await leases.mark_webhook(digest)
    logger.info("webhook set (it was %s)", "elsewhere" if info.url else "not set")
