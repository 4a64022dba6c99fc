"""Webhook mode: a Starlette app under uvicorn receives updates and feeds the Application.

Every bot process serves the path of WEBHOOK_URL (under supervisord they share
one listening socket, as the API processes do). An update is answered 200
only once it was handled, so Telegram's retry covers a crash; 503 asks for
that retry when handling failed for a reason that may pass. A request
without the right `X-Telegram-Bot-Api-Secret-Token` gets 403. One process
sets the webhook (`ensure_webhook`), guarded by a lock and a record of what
was set, so restarts and N processes make one setWebhook call, not N.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
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

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's updates are far smaller; anything larger is not from Telegram
MAX_BODY = 1 << 20
# parallel deliveries Telegram may make (setWebhook's max_connections)
MAX_CONNECTIONS = 40
# seconds between tries to set the webhook while another process or Redis holds it up
SET_RETRY_SECONDS = 2.0


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
        try:
            data = json.loads(body)
            update = Update.de_json(data, bot) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("webhook: not an update: %s", exc.__class__.__name__)
            update = None
        if update is None:
            return _error(400, "invalid_update", "the body must be a Telegram Update")
        if await dispatcher.handle(update):
            return Response(status_code=200)
        return _error(503, "retry", "not handled yet; send it again")

    return Starlette(routes=[Route(path, receive, methods=["POST"])])


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
    """Make sure Telegram posts to WEBHOOK_URL: one process calls setWebhook, once."""
    digest = webhook_digest(settings)
    while not stop.is_set():
        try:
            if await leases.webhook_set() == digest:
                return
            if await leases.lock_webhook():
                await bot.set_webhook(
                    settings.webhook_url,
                    secret_token=settings.webhook_secret.reveal(),
                    allowed_updates=ALLOWED_UPDATES,
                    max_connections=MAX_CONNECTIONS,
                )
                await leases.mark_webhook(digest)
                logger.info("webhook set to %s", settings.webhook_url)
                return
        except (Unavailable, TelegramError) as exc:
            logger.warning("could not set the webhook yet: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SET_RETRY_SECONDS)
