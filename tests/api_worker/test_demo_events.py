"""The demo shop's webhook receiver and "Confirm your order", without a browser: real API
processes (the receiver on the API that delivers to it), a real bot on the sandbox and
Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from api_worker.demo_events import CART, EVENTS_KEY, KEEP
from shared import keys
from tests.fixtures.api import ApiProcess, ApiStarter, api_settings
from tests.fixtures.bot import ANN, AUTH_SECRET, BotStarter, Message, buttons, code_of
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.demo import (
    COOKIE,
    DEMO_KEYS,
    DEMO_WEBHOOK_SECRET,
    DemoSystem,
    demo_webhooks,
    signed_demo_session,
)
from tests.fixtures.sandbox import TelegramSandbox

OTHER_SECRET = "whsec_" + "A" * 43  # 32 bytes, not the shop's
STRANGER = {"id": 7001, "username": "zed", "first_name": "Zed", "last_name": None,
            "language_code": "en"}


@pytest.fixture
def receiver_api(start_api: ApiStarter) -> ApiProcess:
    """The demo with its webhook pointing at itself; no bot (the test signs its own)."""
    port = free_port()
    return start_api(
        port=port, DEMO_PAGE="1", API_KEYS=DEMO_KEYS,
        EVENT_WEBHOOKS=demo_webhooks(f"http://127.0.0.1:{port}"),
    )


def _signed(
    body: dict[str, Any], secret: str = DEMO_WEBHOOK_SECRET, msg_id: str = "evt_7001_1-0",
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(body)
    at = at or datetime.now(UTC)
    return text.encode(), {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, text),
        "Content-Type": "application/json",
    }


def _event(type_: str = "approval.denied", **data: Any) -> dict[str, Any]:
    return {"type": type_, "timestamp": "2026-11-29T17:40:12.345Z",
            "data": {"user": STRANGER, **data}}


def _recorded(redis_url: str) -> list[dict[str, Any]]:
    with redis.Redis.from_url(redis_url) as client:
        return [json.loads(raw) for raw in client.lrange(EVENTS_KEY, 0, -1)]


def test_a_signed_event_is_recorded_once_per_webhook_id(
    redis_url: str, receiver_api: ApiProcess
) -> None:
    body, headers = _signed(_event(id="7001.abc"))
    url = f"{receiver_api.url}/demo/webhooks"
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 204, first.text
    again = httpx.post(url, content=body, headers=headers)  # a retry: the same webhook-id
    assert again.status_code == 204
    (recorded,) = _recorded(redis_url)
    assert recorded == {
        "id": "evt_7001_1-0", "type": "approval.denied", "timestamp": "2026-11-29T17:40:12.345Z",
        "user_id": 7001, "summary": "Zed (@zed) denied the request (7001.abc)", "verified": True,
    }


def test_the_list_is_capped(redis_url: str, receiver_api: ApiProcess) -> None:
    for n in range(KEEP + 5):
        body, headers = _signed(_event("token.revoked"), msg_id=f"evt_7001_{n}-0")
        response = httpx.post(f"{receiver_api.url}/demo/webhooks", content=body, headers=headers)
        assert response.status_code == 204
    recorded = _recorded(redis_url)
    assert len(recorded) == KEEP and recorded[0]["id"] == f"evt_7001_{KEEP + 4}-0"


@pytest.mark.parametrize("forgery", ["other secret", "stale", "future", "no signature",
                                     "changed body", "garbage signature"])
def test_a_bad_or_stale_signature_is_refused(
    redis_url: str, receiver_api: ApiProcess, forgery: str
) -> None:
    now = datetime.now(UTC)
    body, headers = {
        "other secret": lambda: _signed(_event(), secret=OTHER_SECRET),
        "stale": lambda: _signed(_event(), at=now - timedelta(minutes=10)),
        "future": lambda: _signed(_event(), at=now + timedelta(minutes=10)),
        "no signature": lambda: _signed(_event()),
        "changed body": lambda: _signed(_event()),
        "garbage signature": lambda: _signed(_event()),
    }[forgery]()
    if forgery == "no signature":
        del headers["webhook-signature"]
    if forgery == "changed body":
        body = body.replace(b"denied", b"approved")
    if forgery == "garbage signature":
        headers["webhook-signature"] = "v1,not base64 at all!, v1"
    response = httpx.post(f"{receiver_api.url}/demo/webhooks", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_signature"
    assert _recorded(redis_url) == []


def test_without_a_webhook_the_receiver_is_not_there(start_api: ApiStarter) -> None:
    api = start_api(DEMO_PAGE="1", API_KEYS=DEMO_KEYS)
    body, headers = _signed(_event())
    response = httpx.post(f"{api.url}/demo/webhooks", content=body, headers=headers)
    assert response.status_code == 404
    with httpx.Client(base_url=api.url) as visitor:
        assert visitor.get("/demo/events").json() == {
            "configured": False, "logged_in": False, "events": []
        }


def _log_in(system: DemoSystem, visitor: httpx.Client) -> None:
    code = code_of(system.bot.ask("/code", ANN))
    login = visitor.post("/demo/login/code", json={"code": code})
    assert login.status_code == 200, login.text


def _events(visitor: httpx.Client) -> list[dict[str, Any]]:
    listed = visitor.get("/demo/events")
    assert listed.status_code == 200, listed.text
    events: list[dict[str, Any]] = listed.json()["events"]
    return events


def _types(visitor: httpx.Client) -> list[str]:
    return [event["type"] for event in _events(visitor)]


def _prompt(system: DemoSystem, after: int) -> Message:
    return system.sandbox.wait_for_bot_message(ANN["id"], after=after, timeout=40,
                                               token=system.bot.token)


def _last_message(system: DemoSystem) -> int:
    messages = system.sandbox.messages(ANN["id"], token=system.bot.token)
    return max((m["message_id"] for m in messages), default=0)


@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_confirm_your_order_in_telegram(events_demo_system: DemoSystem, decision: str) -> None:
    system = events_demo_system
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        assert visitor.post("/demo/order/confirm", json={}).status_code == 401  # logged out
        _log_in(system, visitor)
        # the redeem's code.redeemed reaches the shop's receiver, signed, and the list
        wait_until(lambda: "code.redeemed" in _types(visitor), timeout=20,
                   what="code.redeemed at the demo's receiver")
        (redeemed,) = _events(visitor)
        assert redeemed["verified"] is True and redeemed["summary"].startswith("Ann (@ann)")

        after = _last_message(system)
        asked = visitor.post("/demo/order/confirm", json={})
        assert asked.status_code == 200, asked.text
        order = asked.json()["order"]
        assert asked.json()["text"] == f"Confirm order #{order}: {CART}"
        prompt = _prompt(system, after)
        assert f"Confirm order #{order}" in prompt["text"]
        (button,) = [b for b in buttons(prompt) if b["text"] == decision]
        started = time.monotonic()
        system.sandbox.tap(ANN["id"], prompt["message_id"], button["callback_data"],
                           user=ANN, token=system.bot.token)
        answer = visitor.get("/demo/order/wait")
        assert time.monotonic() - started < 15
        status = {"Approve": "approved", "Deny": "denied"}[decision]
        assert answer.status_code == 200 and answer.json() == {"status": status}
        assert visitor.get("/demo/order/wait").status_code == 404  # nothing waiting now

        wait_until(lambda: f"approval.{status}" in _types(visitor), timeout=20,
                   what=f"approval.{status} at the demo's receiver")
        decided = _events(visitor)[0]
        assert decided["type"] == f"approval.{status}" and decided["verified"] is True


def test_order_wait_without_an_order_is_404_not_500(receiver_api: ApiProcess) -> None:
    with httpx.Client(base_url=receiver_api.url) as visitor:
        response = visitor.get("/demo/order/wait")
    assert response.status_code == 404 and set(response.json()) == {"error", "message"}


def test_another_visitors_events_are_not_shown(
    redis_url: str, events_demo_system: DemoSystem
) -> None:
    system = events_demo_system
    body, headers = _signed(_event("token.revoked"))  # about user 7001, not Ann
    assert httpx.post(f"{system.api.url}/demo/webhooks", content=body,
                      headers=headers).status_code == 204
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        _log_in(system, visitor)
        wait_until(lambda: "code.redeemed" in _types(visitor), timeout=20,
                   what="code.redeemed at the demo's receiver")
        assert _types(visitor) == ["code.redeemed"]
    assert {e["user_id"] for e in _recorded(redis_url)} == {7001, ANN["id"]}


def test_a_telegram_login_shows_login_approved(events_demo_system: DemoSystem) -> None:
    system = events_demo_system
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        started = visitor.post("/demo/login/telegram", json={})
        assert started.status_code == 200, started.text
        prompt = system.bot.ask(started.json()["start_command"], ANN)
        (button,) = [b for b in buttons(prompt) if b["text"] == "Approve"]
        system.sandbox.tap(ANN["id"], prompt["message_id"], button["callback_data"],
                           user=ANN, token=system.bot.token)
        assert visitor.get("/demo/login/telegram/wait").json()["status"] == "approved"
        wait_until(lambda: "login.approved" in _types(visitor), timeout=20,
                   what="login.approved at the demo's receiver")
        (approved,) = _events(visitor)
        assert approved["summary"] == "Ann (@ann) approved a Telegram login"


def test_an_openid_connect_visitor_confirms_with_their_sub(
    redis_url: str, events_demo_system: DemoSystem
) -> None:
    """The shop knows an OpenID Connect visitor by the login's user (its `sub`): no API
    token, no /v1/me."""
    system = events_demo_system
    settings = api_settings(redis_url, AUTH_SECRET=AUTH_SECRET)
    oidc_user = {"id": ANN["id"], "username": "ann", "first_name": "Ann"}
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        _log_in(system, visitor)  # the bot knows Ann
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        visitor.cookies.set(COOKIE, signed_demo_session(settings, {"oidc": {"user": oidc_user}}))
        after = _last_message(system)
        asked = visitor.post("/demo/order/confirm", json={})
        assert asked.status_code == 200, asked.text
        prompt = _prompt(system, after)
        assert f"Confirm order #{asked.json()['order']}" in prompt["text"]


def test_an_order_nobody_confirms_expires(
    redis_url: str, sandbox: TelegramSandbox, start_bot: BotStarter, start_api: ApiStarter
) -> None:
    bot = start_bot()
    api = start_api(AUTH_SECRET=AUTH_SECRET, DEMO_PAGE="1", API_KEYS=DEMO_KEYS,
                    TELEGRAM_API_BASE_URL=sandbox.api_base, APPROVAL_TTL_SECONDS="2")
    with redis.Redis.from_url(redis_url) as client:
        wait_until(lambda: client.get(keys.BOT_USERNAME), timeout=20,
                   what="the bot to publish its username")
    system = DemoSystem(api=api, bot=bot, sandbox=sandbox)
    with httpx.Client(base_url=api.url, timeout=40) as visitor:
        _log_in(system, visitor)
        assert visitor.post("/demo/order/confirm", json={}).status_code == 200
        started = time.monotonic()
        answer = visitor.get("/demo/order/wait")  # held until the expiry, 2 s on
        assert answer.json() == {"status": "expired"}
        assert time.monotonic() - started < 10


def test_a_visitor_who_blocked_the_bot_is_told_undeliverable(
    events_demo_system: DemoSystem
) -> None:
    system = events_demo_system
    with httpx.Client(base_url=system.api.url, timeout=40) as visitor:
        _log_in(system, visitor)
        system.sandbox.block(ANN["id"], token=system.bot.token)
        assert visitor.post("/demo/order/confirm", json={}).status_code == 200
        started = time.monotonic()
        assert visitor.get("/demo/order/wait").json() == {"status": "undeliverable"}
        assert time.monotonic() - started < 15
