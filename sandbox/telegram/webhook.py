"""Delivering updates to a bot's webhook, as Telegram does.

- Up to the webhook's `max_connections` updates are in flight at once, but
  never two of the same chat: each chat's updates go one at a time, in
  update_id order. Updates without a chat share one such lane.
- An update is POSTed until the webhook answers 2xx, waiting
  FIRST_RETRY_DELAY after its first failure and twice as long after each next
  one, at most MAX_RETRY_DELAY. It leaves the queue only on a 2xx (or when the
  bot drops it: drop_pending_updates, the queue bound).
- Every non-2xx answer or timeout is getWebhookInfo's `last_error_*`; every
  attempt is recorded as method "webhook" (record.py) with the status the
  webhook answered, 0 when it could not be reached or did not answer in
  REQUEST_TIMEOUT, and the update_id.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
from typing import Any

import httpx

from sandbox.telegram.state import JSON, Bot, Sandbox, Webhook

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
FIRST_RETRY_DELAY = 0.1  # seconds; doubles per failed attempt of one update
MAX_RETRY_DELAY = 2.0  # seconds; the backoff never waits longer between attempts
REQUEST_TIMEOUT = 10.0  # seconds for the webhook to answer one update
IDLE_RECHECK = 30.0  # seconds the dispatcher sleeps when nothing changes


def start(sandbox: Sandbox, bot: Bot, hook: Webhook, client: httpx.AsyncClient) -> None:
    hook.task = asyncio.get_running_loop().create_task(
        _Dispatcher(sandbox, bot, hook, client).run()
    )


def stop(hook: Webhook | None) -> None:
    if hook is not None and hook.task is not None:
        hook.task.cancel()


def chat_of(update: JSON) -> int | None:
    """The id of the chat an update belongs to, or None."""
    for key, value in update.items():
        if key == "update_id" or not isinstance(value, dict):
            continue
        chat = value.get("chat")
        if chat is None and isinstance(value.get("message"), dict):
            chat = value["message"].get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return int(chat["id"])
    return None


def _position(bot: Bot, update: JSON) -> int | None:
    """Where `update` is in the bot's queue (kept in update_id order), or None if gone."""
    update_id = update["update_id"]
    index = bisect.bisect_left(bot.updates, update_id, key=lambda u: int(u["update_id"]))
    if index < len(bot.updates) and bot.updates[index] is update:
        return index
    return None


class _Dispatcher:
    """One webhook's deliveries: starts an update's delivery whenever its lane is free."""

    def __init__(self, sandbox: Sandbox, bot: Bot, hook: Webhook, client: httpx.AsyncClient):
        self.sandbox, self.bot, self.hook, self.client = sandbox, bot, hook, client
        self.headers = {SECRET_HEADER: hook.secret_token} if hook.secret_token else {}
        self.busy: dict[int | None, asyncio.Task[None]] = {}  # lane (chat id) -> its delivery
        self.finished = 0

    def active(self) -> bool:
        return self.bot.webhook is self.hook and not self.bot.closed

    def _stamp(self) -> tuple[int, int, int]:
        """Changes whenever an update is queued or leaves the queue, or a delivery ends."""
        return self.bot.next_update_id, len(self.bot.updates), self.finished

    async def run(self) -> None:
        try:
            while self.active():
                for update in self._ready():
                    lane = chat_of(update)
                    task = asyncio.get_running_loop().create_task(self._deliver(update, lane))
                    self.busy[lane] = task
                    task.add_done_callback(functools.partial(self._done, lane))
                await self._changes(self._stamp())
        finally:
            for task in self.busy.values():
                task.cancel()

    async def _changes(self, stamp: tuple[int, int, int]) -> None:
        """Until something the dispatcher acts on changed (or IDLE_RECHECK passed)."""
        await self.sandbox.wait_for(
            lambda: not self.active() or self._stamp() != stamp, IDLE_RECHECK
        )

    def _done(self, lane: int | None, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("webhook delivery failed unexpectedly", exc_info=task.exception())
        self.busy.pop(lane, None)
        self.finished += 1
        self.sandbox.changed()

    def _ready(self) -> list[JSON]:
        """The first queued update of each free lane, in queue order, up to max_connections."""
        room = self.hook.max_connections - len(self.busy)
        found: list[JSON] = []
        seen: set[int | None] = set()
        for update in self.bot.updates:
            if room <= len(found):
                break
            lane = chat_of(update)
            if lane in seen:
                continue
            seen.add(lane)
            if lane not in self.busy:
                found.append(update)
        return found

    async def _deliver(self, update: JSON, lane: int | None) -> None:
        failures = 0
        while self.active() and _position(self.bot, update) is not None:
            status, error = await _post(self.client, self.hook.url, update, self.headers)
            self.bot.record.add("webhook", status, lane, update_id=update["update_id"])
            if error is None:
                index = _position(self.bot, update)
                if index is not None:
                    del self.bot.updates[index]
                return
            self.hook.last_error_date = int(time.time())
            self.hook.last_error_message = error
            failures += 1
            delay = min(FIRST_RETRY_DELAY * 2 ** (failures - 1), MAX_RETRY_DELAY)
            logger.info("webhook delivery of update %s failed (%s); retry in %.1f s",
                        update["update_id"], error, delay)
            await asyncio.sleep(delay)


async def _post(
    client: httpx.AsyncClient, url: str, update: dict[str, Any], headers: dict[str, str]
) -> tuple[int, str | None]:
    """The webhook's status (0: no answer) and, unless 2xx, the error getWebhookInfo reports."""
    try:
        response = await client.post(url, json=update, headers=headers, timeout=REQUEST_TIMEOUT)
    except httpx.TimeoutException:
        return 0, "Read timeout expired"
    except httpx.HTTPError as exc:
        return 0, f"Connection failed: {exc.__class__.__name__}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return (
        response.status_code,
        f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}",
    )
