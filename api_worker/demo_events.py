"""The demo shop's second factor and its webhook receiver.

"Confirm your order" asks the logged-in visitor to approve the order in Telegram: the
shop's server calls POST /v1/approvals with its API key (as the demo calls the API for
logins), keeps the approval's id in its signed cookie and long-polls GET
/v1/approvals/{id}?wait= for the page, which shows Approved, Denied, Expired or
Undeliverable.

POST /demo/webhooks is the shop's own receiver of tglogin's events: it verifies the
Standard Webhooks signature with the `standardwebhooks` package and the shop's
`whsec_` secret (the EVENT_WEBHOOKS entry whose URL is this receiver, two during a
rotation), refuses a bad or stale one with 401, and records the event in a short list
in Redis that every API process reads (`EVENTS_KEY`, the newest `KEEP`), once per
`webhook-id`. GET /demo/events shows a visitor the recorded events about them.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api_worker import context
from api_worker.body import read_limited
from api_worker.demo import DemoError, call_api, failure, json_body, long_poll, ok
from api_worker.errors import ApiError, NotFound
from shared.redis import unavailable_on_error
from shared.settings import Secret, Settings

logger = logging.getLogger(__name__)

RECEIVER_PATH = "/demo/webhooks"
# the demo's own keys (it is no part of tglogin's schema in shared/keys.py): the recorded
# events, newest first, trimmed to KEEP; and each recorded webhook-id (SEEN_TTL)
EVENTS_KEY = "tgl:demo:events"
SEEN_PREFIX = "tgl:demo:seen:"
KEEP = 50
SEEN_TTL = 86400  # s: longer than any retry of one event (EVENT_RETRY_SECONDS default)
MAX_EVENT_BYTES = 16384
CART = "2 \u00d7 Telegram stickers, 9.99 \u20ac"  # a multiplication sign, a euro sign
_STATUSES = ("approved", "denied", "expired", "undeliverable")
_DID = {
    "code.redeemed": "logged in with a code",
    "login.approved": "approved a Telegram login",
    "login.denied": "denied a Telegram login",
    "approval.approved": "approved the request",
    "approval.denied": "denied the request",
    "approval.expired": "let the request expire",
    "token.revoked": "logged out (access token revoked)",
    "session.ended": "ended a session in the bot",
    "user.logged_out": "sent /logout in the bot",
}


class BadSignature(ApiError):
    status = 401
    error = "invalid_signature"


def receiver_secrets(settings: Settings) -> tuple[Secret, ...]:
    """The secrets of the EVENT_WEBHOOKS entries whose URL is this receiver (for the
    demo's API client, the first of API_KEYS); none when the demo has no webhook."""
    name = settings.api_keys[0].name if settings.api_keys else None
    found: list[Secret] = []
    for hook in settings.event_webhooks:
        if hook.client == name and urlsplit(hook.url).path == RECEIVER_PATH:
            found += [s for s in hook.secrets if s not in found]
    return tuple(found)


def _verify(signers: list[Webhook], body: bytes, headers: dict[str, str]) -> Any:
    """The event, if one of the secrets signed it within the last 5 minutes."""
    for signer in signers:
        try:
            return signer.verify(body, headers)
        except (WebhookVerificationError, ValueError, TypeError):
            continue  # malformed headers or body are as bad as a wrong signature
    raise BadSignature("The webhook signature is missing, wrong or stale.")


def _name(user: Any) -> str:
    if not isinstance(user, dict):
        return "someone"
    name = " ".join(str(p) for p in (user.get("first_name"), user.get("last_name")) if p)
    name = name or f"user {user.get('id')}"
    return f"{name} (@{user['username']})" if user.get("username") else name


def summary(type_: str, data: dict[str, Any]) -> str:
    """One line about the event, as the shop's log would show it."""
    said = f"{_name(data.get('user'))} {_DID.get(type_, type_)}"
    if type_.startswith("approval.") and isinstance(data.get("id"), str):
        said += f" ({data['id'][:40]})"
    return said


async def receive(signers: list[Webhook], request: Request) -> Response:
    if not signers:
        raise NotFound("This shop has no webhook configured.")
    body = await read_limited(request, MAX_EVENT_BYTES)
    event = _verify(signers, body, dict(request.headers))
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or not isinstance(event.get("type"), str):
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    user = data.get("user")
    record = {
        "id": request.headers["webhook-id"][:100],
        "type": event["type"][:40],
        "timestamp": str(event.get("timestamp", ""))[:40],
        "user_id": user.get("id") if isinstance(user, dict) else None,
        "summary": summary(event["type"], data),
        "verified": True,
    }
    redis = context.store(request).redis
    with unavailable_on_error():
        # at least once: a retried delivery (the same webhook-id) is recorded once
        if await redis.set(SEEN_PREFIX + record["id"], "1", nx=True, ex=SEEN_TTL):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.lpush(EVENTS_KEY, json.dumps(record, ensure_ascii=False))
                pipe.ltrim(EVENTS_KEY, 0, KEEP - 1)
                await pipe.execute()
    logger.info("demo: webhook %s (%s) verified", record["id"], record["type"])
    return Response(status_code=204)


# -- the visitor ------------------------------------------------------------------------


async def visitor_id(request: Request) -> int | None:
    """The logged-in visitor's Telegram id: from the OpenID Connect login's user, or
    from the API's /v1/me for the access token (kept in the cookie beside the token's
    tail, so a poll costs no call and another login never inherits it)."""
    oidc = request.session.get("oidc")
    if isinstance(oidc, dict):
        uid = oidc.get("user", {}).get("id")
        return uid if isinstance(uid, int) else None
    token = request.session.get("token")
    if not isinstance(token, str):
        return None
    known = request.session.get("uid")
    if isinstance(known, list) and len(known) == 2 and known[1] == token[-12:]:
        return int(known[0])
    response = await call_api(request, "GET", "/v1/me", token=token)
    if response.status_code == 401:
        return None
    if response.status_code != 200:
        raise failure(response)
    uid = response.json()["user"]["id"]
    request.session["uid"] = [uid, token[-12:]]
    return int(uid)


async def events(request: Request) -> Response:
    """The recorded events about the logged-in visitor, newest first."""
    configured = bool(receiver_secrets(context.settings(request)))
    uid = await visitor_id(request)
    if uid is None or not configured:
        return ok({"configured": configured, "logged_in": uid is not None, "events": []})
    with unavailable_on_error():
        raw = await context.store(request).redis.lrange(EVENTS_KEY, 0, KEEP - 1)
    mine = [e for e in (json.loads(r) for r in raw) if e.get("user_id") == uid]
    for event in mine:
        event.pop("user_id", None)
    return ok({"configured": True, "logged_in": True, "events": mine})


# -- confirm your order -------------------------------------------------------------------


async def confirm_order(request: Request) -> Response:
    await json_body(request)
    uid = await visitor_id(request)
    if uid is None:
        raise DemoError(401, "logged_out", "Please log in first.")
    order = f"{secrets.randbelow(9000) + 1000}"
    text = f"Confirm order #{order}: {CART}"
    response = await call_api(
        request, "POST", "/v1/approvals",
        body={"user_id": uid, "text": text, "state": f"order-{order}"},
    )
    if response.status_code == 404:
        raise DemoError(
            409, "unknown_user", "The bot does not know you (any more): log out, log in "
            "again, then confirm."
        )
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", "a few")
        raise DemoError(
            429, "rate_limited", f"Too many confirmations asked. Try again in {wait} seconds."
        )
    if response.status_code != 201:
        raise failure(response)
    created = response.json()
    request.session["approval"] = created["id"]
    return ok({"order": order, "text": text, "expires_in": created["expires_in"]})


async def wait_order(request: Request) -> Response:
    """One long poll: the approval's status once it is decided, or after WAIT_SECONDS."""
    result = await long_poll(request, "approval", "/v1/approvals",
                             "No order is waiting for confirmation.")
    if result is None:
        return ok({"status": "expired"})
    status = result.get("status")
    if status in _STATUSES:
        request.session.pop("approval", None)
        return ok({"status": status})
    return ok({"status": "pending", "expires_in": result.get("expires_in")})


def routes(settings: Settings, cookie: Middleware) -> list[BaseRoute]:
    signers = [Webhook(secret.reveal()) for secret in receiver_secrets(settings)]

    async def receiver(request: Request) -> Response:
        return await receive(signers, request)

    return [
        Route(RECEIVER_PATH, receiver, methods=["POST"]),
        Route("/demo/events", events, methods=["GET"], middleware=[cookie]),
        Route("/demo/order/confirm", confirm_order, methods=["POST"], middleware=[cookie]),
        Route("/demo/order/wait", wait_order, methods=["GET"], middleware=[cookie]),
    ]
