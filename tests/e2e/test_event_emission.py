"""Events from the real flows across real processes: an API worker (its deliverer), a bot
worker and the Telegram sandbox, a webhook receiver verifying each signature with the
`standardwebhooks` library. A user logs in through a deep link, then with a code, ends
the first session from /sessions and logs out: the shop's endpoint gets each event,
signed, in the order it happened, and its pull stream holds the same."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from shared.settings import load_settings
from shared.tokens import unseal
from tests.fixtures.api import ApiStarter
from tests.fixtures.bot import (
    ANN,
    AUTH_SECRET,
    BotProcess,
    BotStarter,
    Message,
    answer_and_edit,
    buttons,
    code_of,
)
from tests.fixtures.common import wait_until
from tests.fixtures.webhooks import Receiver, new_secret, receivers

KEYS = "shop.example:shop-key-0123456789abcdefgh,blog.example:blog-key-0123456789abcdefgh"
SHOP = {"X-API-Key": "shop-key-0123456789abcdefgh"}
BLOG = {"X-API-Key": "blog-key-0123456789abcdefgh"}
# ANN as the API shows her
USER = {"id": ANN["id"], "username": "ann", "first_name": "Ann", "last_name": None,
        "language_code": "en"}


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    yield from receivers()


def session_of(token: str) -> str:
    secret = load_settings(env={"AUTH_SECRET": AUTH_SECRET}, env_file="/nonexistent").auth_secret
    claims = unseal(secret, token)
    assert claims is not None
    return claims.token_id


def tap(bot: BotProcess, shown: Message, data: str) -> Message:
    sent = bot.sandbox.tap(shown["chat"]["id"], shown["message_id"], data, ANN, bot.token)
    _, edited = answer_and_edit(bot, shown, sent["callback_query_id"])
    return edited


def test_a_users_events_arrive_signed_in_order(
    start_api: ApiStarter, start_bot: BotStarter, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret])
    hooks = json.dumps([{"client": "shop.example", "url": hook.url, "secret": secret}])
    bot = start_bot(API_KEYS=KEYS)
    api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, EVENT_WEBHOOKS=hooks)
    with httpx.Client(base_url=api.url, timeout=10) as http:
        # a deep-link login, approved in the bot
        created = http.post("/v1/login-requests", json={"state": "cart-7"}, headers=SHOP)
        assert created.status_code == 201, created.text
        prompt = bot.ask(created.json()["start_command"], ANN)
        tap(bot, prompt, buttons(prompt)[0]["callback_data"])
        polled = http.get(f"/v1/login-requests/{created.json()['id']}", headers=SHOP)
        assert polled.json()["status"] == "approved", polled.text
        by_link = session_of(polled.json()["access_token"])
        # a code redeemed
        code = code_of(bot.ask("/code", ANN))
        redeemed = http.post("/v1/codes/redeem", json={"code": code}, headers=SHOP)
        assert redeemed.status_code == 200, redeemed.text
        by_code = session_of(redeemed.json()["access_token"])
        # the deep-link session ended from /sessions
        shown = bot.ask("/sessions", ANN)
        (end,) = [b["callback_data"] for b in buttons(shown)
                  if b["callback_data"].startswith("se:") and b["callback_data"].endswith(by_link)]
        tap(bot, shown, end)
        # and /logout ends the one left
        bot.ask("/logout", ANN)

        expected = [
            ("login.approved", {"user": USER, "state": "cart-7"}),
            ("code.redeemed", {"user": USER, "session": by_code}),
            ("session.ended", {"user": USER, "session": by_link}),
            ("user.logged_out", {"user": USER, "sessions": 1}),
        ]
        got = hook.wait("four deliveries", lambda: len(hook.accepted()) >= 4 and hook.accepted())
        assert [(d.payload["type"], d.payload["data"]) for d in got] == expected
        assert all(d.verified_by == [secret] for d in got)
        assert len({d.id for d in got}) == 4

        def pulled() -> list[dict[str, Any]] | None:
            events: list[dict[str, Any]] = http.get("/v1/events", headers=SHOP).json()["events"]
            return events if len(events) >= 4 else None

        events = wait_until(pulled, timeout=15, what="four pulled events")
        assert [(e["type"], e["data"]) for e in events] == expected
        assert http.get("/v1/events", headers=BLOG).json()["events"] == []
