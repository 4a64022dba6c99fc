"""getUpdates (long polling) and the webhook methods."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from sandbox.telegram import webhook
from sandbox.telegram.errors import ApiError, bad_request
from sandbox.telegram.longpoll import unless_disconnected
from sandbox.telegram.registry import Call, Described, method
from sandbox.telegram.state import JSON, Bot, Webhook

MAX_POLL_TIMEOUT = 50.0  # seconds, like Telegram's own cap on long polling
_TERMINATED = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_SECRET_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _allowed_updates(call: Call) -> list[str] | None:
    value = call.params.structured("allowed_updates")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("can't parse allowed updates")
    return value


def _confirm(bot: Bot, offset: int | None) -> None:
    if offset is None or offset == 0:
        return
    if offset < 0:
        bot.updates = bot.updates[offset:]
    else:
        bot.updates = [u for u in bot.updates if u["update_id"] >= offset]


@method("getUpdates")
async def get_updates(call: Call) -> list[JSON]:
    bot, sandbox = call.bot, call.sandbox
    if bot.webhook is not None:
        raise ApiError(409, _WEBHOOK_ACTIVE)
    limit = min(max(call.params.integer("limit", 100) or 100, 1), 100)
    timeout = min(max(call.params.number("timeout", 0.0), 0.0), MAX_POLL_TIMEOUT)
    allowed = _allowed_updates(call)
    if allowed is not None:
        bot.allowed_updates = allowed or None
    _confirm(bot, call.params.integer("offset"))
    bot.poll_generation += 1
    generation = bot.poll_generation
    sandbox.changed()  # an older pending poll of this bot ends with 409

    def outcome() -> str | list[JSON]:
        if bot.poll_generation != generation:
            return "conflict"
        if bot.closed:
            return "closed"
        if bot.webhook is not None:
            return "webhook"
        return bot.updates[:limit]

    bot.polls_pending += 1
    try:
        result = await unless_disconnected(call.request, sandbox.wait_for(outcome, timeout))
    finally:
        bot.polls_pending -= 1
    if result == "conflict":
        raise ApiError(409, _TERMINATED)
    if result == "webhook":
        raise ApiError(409, _WEBHOOK_ACTIVE)
    return result if isinstance(result, list) else []


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return  # the sandbox allows plain HTTP on this machine
    raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")


@method("setWebhook")
async def set_webhook(call: Call) -> Described:
    bot, params = call.bot, call.params
    url = (params.string("url") or "").strip()
    if not url:
        return await delete_webhook(call)
    _check_url(url)
    secret = params.string("secret_token")
    if secret is not None and (not 1 <= len(secret) <= 256 or set(secret) - _SECRET_CHARS):
        raise bad_request("secret token contains unallowed characters")
    max_connections = params.integer("max_connections", 40) or 40
    if not 1 <= max_connections <= 100:
        raise bad_request("invalid max_connections specified")
    allowed = _allowed_updates(call)
    if params.flag("drop_pending_updates"):
        bot.updates.clear()
    old = bot.webhook
    webhook.stop(old)
    hook = Webhook(url=url, secret_token=secret or None, max_connections=max_connections,
                   allowed_updates=allowed or None)
    bot.webhook = hook
    webhook.start(call.sandbox, bot, hook, call.request.app.state.http)
    call.sandbox.changed()  # a pending getUpdates ends with 409
    already = old is not None and old.url == url
    return Described(True, "Webhook is already set" if already else "Webhook was set")


@method("deleteWebhook")
async def delete_webhook(call: Call) -> Described:
    bot = call.bot
    if call.params.flag("drop_pending_updates"):
        bot.updates.clear()
    if bot.webhook is None:
        return Described(True, "Webhook is already deleted")
    webhook.stop(bot.webhook)
    bot.webhook = None
    call.sandbox.changed()
    return Described(True, "Webhook was deleted")


@method("getWebhookInfo")
async def get_webhook_info(call: Call) -> JSON:
    hook = call.bot.webhook
    info: dict[str, Any] = {
        "url": hook.url if hook else "", "has_custom_certificate": False,
        "pending_update_count": len(call.bot.updates),
    }
    if hook is not None:
        info["max_connections"] = hook.max_connections
        info["ip_address"] = "127.0.0.1"
        if hook.allowed_updates:
            info["allowed_updates"] = hook.allowed_updates
        if hook.last_error_date is not None:
            info["last_error_date"] = hook.last_error_date
            info["last_error_message"] = hook.last_error_message
    return info
