"""Delivering updates to a bot's webhook: one POST at a time, in order, retried until 2xx."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from sandbox.telegram.state import Bot, Sandbox, Webhook

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
FIRST_RETRY_DELAY = 0.1  # seconds; doubles per failed attempt of one update
MAX_RETRY_DELAY = 2.0  # seconds; the backoff never waits longer between attempts
REQUEST_TIMEOUT = 10.0  # seconds for the webhook to answer one update


def start(sandbox: Sandbox, bot: Bot, hook: Webhook, client: httpx.AsyncClient) -> None:
    hook.task = asyncio.get_running_loop().create_task(_deliver(sandbox, bot, hook, client))


def stop(hook: Webhook | None) -> None:
    if hook is not None and hook.task is not None:
        hook.task.cancel()


async def _deliver(sandbox: Sandbox, bot: Bot, hook: Webhook, client: httpx.AsyncClient) -> None:
    failures = 0
    headers = {SECRET_HEADER: hook.secret_token} if hook.secret_token else {}
    while bot.webhook is hook and not bot.closed:
        if not bot.updates:
            await sandbox.wait_for(
                lambda: bot.updates or bot.webhook is not hook or bot.closed, 30
            )
            continue
        update = bot.updates[0]
        error = await _post(client, hook.url, update, headers)
        if error is None:
            if bot.updates and bot.updates[0] is update:
                bot.updates.pop(0)
            failures = 0
            sandbox.changed()
            continue
        hook.last_error_date = int(time.time())
        hook.last_error_message = error
        failures += 1
        delay = min(FIRST_RETRY_DELAY * 2 ** (failures - 1), MAX_RETRY_DELAY)
        logger.info("webhook delivery of update %s failed (%s); retry in %.1f s",
                    update["update_id"], error, delay)
        await asyncio.sleep(delay)


async def _post(
    client: httpx.AsyncClient, url: str, update: dict[str, object], headers: dict[str, str]
) -> str | None:
    """None on a 2xx answer, else the error Telegram would report in getWebhookInfo."""
    try:
        response = await client.post(url, json=update, headers=headers, timeout=REQUEST_TIMEOUT)
    except httpx.TimeoutException:
        return "Read timeout expired"
    except httpx.HTTPError as exc:
        return f"Connection failed: {exc.__class__.__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}"
