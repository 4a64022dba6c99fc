"""Sending one event to one webhook endpoint: Standard Webhooks signing and the HTTP
attempt (`api_worker.user_delivery` decides what to send, when, and what follows).

Rules of this module:
- A request is signed per Standard Webhooks with every secret of its endpoint (two
  during a rotation): `webhook-id` is the event's stable id, the same on every attempt,
  `webhook-timestamp` the attempt's time, so each attempt is signed afresh.
- An attempt has one deadline, EVENT_TIMEOUT_SECONDS, for all of it (connecting, sending,
  the answer's status and body): a receiver trickling its answer fails the attempt. Of
  the answer's body at most BODY_CAP bytes are read, the rest is never read (the
  connection is closed): a huge answer costs no memory, and its status counts.
- Only a 2xx counts as delivered; a redirect is not followed. Each attempt counts in
  /metrics (delivered or failed) and is logged with the endpoint's host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from standardwebhooks import Webhook

from shared import keys
from shared.counters import Counter
from shared.redis import Unavailable, unavailable_on_error
from shared.settings import EventWebhook, Settings

logger = logging.getLogger(__name__)

# of a webhook's answer, the body bytes read at most (the rest is never read)
BODY_CAP = 4096


class WebhookSender:
    """Signed POSTs to the endpoints of EVENT_WEBHOOKS, on one HTTP client."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self._http = httpx.AsyncClient(
            timeout=settings.event_timeout_seconds, follow_redirects=False
        )
        self._signers = {
            secret: Webhook(secret.reveal())
            for hook in settings.event_webhooks for secret in hook.secrets
        }

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, hook: EventWebhook, evt: str, body: str) -> bool:
        """One signed attempt, within EVENT_TIMEOUT_SECONDS in all (its answer's body
        read up to BODY_CAP, the rest left unread); True on a 2xx."""
        moment = datetime.now(UTC)
        signature = " ".join(
            self._signers[secret].sign(evt, moment, body) for secret in hook.secrets
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "tglogin-webhooks",
            "webhook-id": evt,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signature,
        }
        try:
            async with asyncio.timeout(self.settings.event_timeout_seconds):
                async with self._http.stream(
                    "POST", hook.url, content=body.encode(), headers=headers
                ) as response:
                    read = 0
                    # raw: a compressed answer is never inflated
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= BODY_CAP:
                            break  # leaving the block closes the connection
        except TimeoutError:  # the attempt's deadline (a slow or trickling receiver)
            outcome, ok = "deadline", False
        except httpx.HTTPError as exc:
            outcome, ok = type(exc).__name__, False
        else:
            outcome = str(response.status_code)
            ok = 200 <= response.status_code < 300
        counter = Counter.WEBHOOKS_DELIVERED if ok else Counter.WEBHOOK_ATTEMPTS_FAILED
        with contextlib.suppress(Unavailable), unavailable_on_error():
            await self.redis.hincrby(keys.stats(), counter, 1)
        logger.log(
            logging.DEBUG if ok else logging.WARNING, "webhook %s to %s: %s",
            evt, urlsplit(hook.url).hostname, outcome,
        )
        return ok
