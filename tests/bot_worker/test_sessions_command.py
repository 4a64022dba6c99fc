# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""`/sessions` in the bot: a real bot process with the Telegram sandbox, a real API process
and real Redis. Tokens are obtained the three ways there are (a code redeemed at the API,
a deep-link approval, an OpenID Connect code at the token endpoint), each from an address
of its own (X-Forwarded-For from the loopback, which the API trusts)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import keys
from shared.oidc_grants import InvalidGrant, OidcGrants
from shared.settings import Settings, load_settings
from shared.store import Store
from shared.tokens import unseal
from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import (
    ANN,
    AUTH_SECRET,
    IVAN,
    BotProcess,
    BotStarter,
    Message,
    answer_and_edit,
    buttons,
    code_of,
)
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.oidc import CHALLENGE, SHOP, SHOP_CALLBACK, SHOP_SECRET, VERIFIER, oidc_env
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store
from tests.fixtures.turns import TurnCounter

API_KEYS = "shop.example:shop-key-0123456789abcdefgh,blog.example:blog-key-0123456789abcdefgh"
SHOP_KEY = {"X-API-Key": "shop-key-0123456789abcdefgh"}
BLOG_KEY = {"X-API-Key": "blog-key-0123456789abcdefgh"}


@dataclass
class System:
    bot: BotProcess
    api: ApiProcess
    settings: Settings

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=10)


@pytest.fixture
def system(
    start_bot: BotStarter, start_api: ApiStarter, redis_url: str, tmp_path: Path
) -> System:
    port = free_port()
    env = {**oidc_env(tmp_path), "OIDC_ISSUER": f"http://127.0.0.1:{port}",
           "API_KEYS": API_KEYS}
    bot = start_bot(**env)
    api = start_api(port=port, AUTH_SECRET=AUTH_SECRET, **env)
    settings = load_settings(env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url, **env},
                             env_file="/nonexistent")
    return System(bot, api, settings)


# -- obtaining tokens ------------------------------------------------------------------------


def redeem(system: System, user: Message, address: str, key: dict[str, str]) -> str:
    """A code from the bot, redeemed at the API from `address`."""
    code = code_of(system.bot.ask("/code", user))
    with system.http() as http:
        response = http.post("/v1/codes/redeem", json={"code": code},
                             headers={**key, "X-Forwarded-For": address})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def approve(system: System, user: Message, address: str, key: dict[str, str]) -> str:
    """A deep-link login approved in the bot, its token taken by a poll from `address`."""
    with system.http() as http:
        created = http.post("/v1/login-requests", json={}, headers=key)
        assert created.status_code == 201, created.text
        prompt = system.bot.ask(created.json()["start_command"], user)
        approve_data = buttons(prompt)[0]["callback_data"]
        sent = system.bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"],
                                      approve_data, user, system.bot.token)
        answer_and_edit(system.bot, prompt, sent["callback_query_id"])
        polled = http.get(f"/v1/login-requests/{created.json()['id']}",
                          headers={**key, "X-Forwarded-For": address})
    assert polled.status_code == 200 and polled.json()["status"] == "approved", polled.text
    return str(polled.json()["access_token"])


def oidc_tokens(system: System, user: Message, address: str) -> dict[str, Any]:
    """An OpenID Connect login of `user` at the shop: the code as the authorization page
    makes it once the user approves, exchanged at the token endpoint from `address`."""
    record = {"username": None, "last_name": None, "language_code": None, **user}

    def create(store: Store) -> Any:
        return OidcGrants(store.redis, system.settings).create(
            SHOP["client_id"], SHOP_CALLBACK, CHALLENGE, None, record, int(time.time()),
            "openid profile")

    code = run_on_store(system.settings, create)
    with system.http() as http:
        response = http.post(
            "/oauth/token", auth=(SHOP["client_id"], SHOP_SECRET),
            data={"grant_type": "authorization_code", "code": code,
                  "redirect_uri": SHOP_CALLBACK, "code_verifier": VERIFIER},
            headers={"X-Forwarded-For": address})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def me(system: System, token: str, key: dict[str, str]) -> int:
    with system.http() as http:
        return http.get("/v1/me", headers={**key, "Authorization": f"Bearer {token}"}).status_code


def userinfo(system: System, token: str) -> int:
    with system.http() as http:
        return http.get("/oauth/userinfo",
                        headers={"Authorization": f"Bearer {token}"}).status_code


# -- the list and its buttons ----------------------------------------------------------------


def tap(system: System, shown: Message, data: str, user: Message) -> tuple[str, Message]:
    """Tap the button with `data` under the list: the callback answer, the edited list."""
    sent = system.bot.sandbox.tap(shown["chat"]["id"], shown["message_id"], data, user,
                                  system.bot.token)
    answer, edited = answer_and_edit(system.bot, shown, sent["callback_query_id"])
    return str(answer.get("text") or ""), edited


def end_data(shown: Message) -> list[str]:
    return [b["callback_data"] for b in buttons(shown) if b["callback_data"].startswith("se:")]


def page_data(shown: Message) -> dict[str, str]:
    return {b["text"]: b["callback_data"] for b in buttons(shown)
            if b["callback_data"].startswith("sp:")}


def token_id(token: str) -> str:
    claims = unseal(load_settings(env={"AUTH_SECRET": AUTH_SECRET},
                                  env_file="/nonexistent").auth_secret, token)
    assert claims is not None
    return claims.token_id


# -- tests -----------------------------------------------------------------------------------


def test_sessions_lists_each_way_in_with_client_times_and_network(system: System) -> None:
    assert system.bot.ask("/sessions", ANN)["text"] == "No active sessions."
    by_code = redeem(system, ANN, "203.0.113.5", SHOP_KEY)
    by_link = approve(system, ANN, "2001:db8:7:1::42", BLOG_KEY)
    by_oidc = oidc_tokens(system, ANN, "198.51.100.20")["access_token"]
    shown = system.bot.ask("/sessions", ANN)
    text = shown["text"]
    assert text.startswith("Active sessions: 3.")
    for part in ("shop.example", "blog.example", "Shop Example", "from 203.0.113.0/24",
                 "from 2001:db8:7::/48", "from 198.51.100.0/24", "last used just now"):
        assert part in text, text
    today = time.strftime("%b %Y", time.gmtime())
    assert text.count("since ") == 3 and today in text
    # never the whole address, never a token
    for secret in ("203.0.113.5", "2001:db8:7:1", "198.51.100.20", by_code, by_link, by_oidc):
        assert secret not in text
    ends = end_data(shown)
    assert len(ends) == 3 and not page_data(shown)
    for data in ends:
        assert len(data.encode()) <= 64
        assert not any(token in data for token in (by_code, by_link, by_oidc))
    assert {data.rsplit(":", 1)[1] for data in ends} >= {token_id(by_code), token_id(by_link)}
    assert "End 1 · " in buttons(shown)[0]["text"]


def test_end_makes_the_token_fail_at_once_and_a_second_end_says_so(system: System) -> None:
    kept = redeem(system, ANN, "203.0.113.5", SHOP_KEY)
    ended = redeem(system, ANN, "203.0.113.6", BLOG_KEY)
    oidc = oidc_tokens(system, ANN, "198.51.100.20")
    shown = system.bot.ask("/sessions", ANN)
    older = system.bot.ask("/sessions", ANN)  # a second list, still showing it after
    (end_blog,) = [d for d in end_data(shown) if d.endswith(token_id(ended))]
    assert me(system, ended, BLOG_KEY) == 200
    answer, edited = tap(system, shown, end_blog, ANN)
    assert answer == "Session with blog.example ended."
    assert me(system, ended, BLOG_KEY) == 401  # at once: nothing cached anywhere
    assert me(system, kept, SHOP_KEY) == 200
    assert edited["text"].startswith("Active sessions: 2.") and "blog.example" not in edited["text"]
    assert len(end_data(edited)) == 2
    # the same session's button in the other list, which still shows it
    answer, again = tap(system, older, end_blog, ANN)
    assert answer == "This session has already ended."
    assert again["text"].startswith("Active sessions: 2.")
    # an OpenID Connect session: its access token fails at userinfo, its refresh token too
    assert userinfo(system, oidc["access_token"]) == 200
    (end_oidc,) = [d for d in end_data(again) if not d.endswith(token_id(kept))]
    answer, last = tap(system, again, end_oidc, ANN)
    assert answer == "Session with Shop Example ended."
    assert userinfo(system, oidc["access_token"]) == 401
    with system.http() as http:
        refreshed = http.post("/oauth/token", auth=(SHOP["client_id"], SHOP_SECRET),
                              data={"grant_type": "refresh_token",
                                    "refresh_token": oidc["refresh_token"]})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    assert last["text"].startswith("Active sessions: 1.")
    # /logout still ends the rest and counts only the live ones
    assert system.bot.ask("/logout", ANN)["text"].startswith("1 session ended.")
    assert me(system, kept, SHOP_KEY) == 401
    assert system.bot.ask("/sessions", ANN)["text"] == "No active sessions."


def test_twelve_sessions_page_by_five(system: System) -> None:
    """12 sessions: three pages (5, 5, 2) with page buttons; End on the last page keeps
    it."""

    async def make(store: Store) -> list[str]:
        record = {"username": None, "last_name": None, "language_code": None, **ANN}
        generation = await store.sessions.enter(record)
        shop = system.settings.api_keys[0]
        return [await store.sessions.token_for_approval(record, generation, shop,
                                                        f"10.0.{n}.1") for n in range(12)]

    tokens = run_on_store(system.settings, make)
    shown = system.bot.ask("/sessions", ANN)
    assert shown["text"].startswith("Active sessions: 12. Page 1 of 3.")
    assert len(end_data(shown)) == 5 and list(page_data(shown)) == ["›"]
    _, second = tap(system, shown, page_data(shown)["›"], ANN)
    assert "Page 2 of 3." in second["text"] and list(page_data(second)) == ["‹", "›"]
    assert "6. shop.example" in second["text"] and "10. shop.example" in second["text"]
    _, third = tap(system, second, page_data(second)["›"], ANN)
    assert "Page 3 of 3." in third["text"] and len(end_data(third)) == 2
    assert "12. shop.example" in third["text"] and list(page_data(third)) == ["‹"]
    seen = {d.rsplit(":", 1)[1] for d in end_data(shown) + end_data(second) + end_data(third)}
    assert seen == {token_id(token) for token in tokens}
    answer, after = tap(system, third, end_data(third)[0], ANN)
    assert answer == "Session with shop.example ended."
    assert after["text"].startswith("Active sessions: 11. Page 3 of 3.")
    assert len(end_data(after)) == 1
    _, back = tap(system, after, page_data(after)["‹"], ANN)
    assert "Page 2 of 3." in back["text"]


def test_sessions_in_russian(system: System) -> None:
    assert system.bot.ask("/sessions", IVAN)["text"] == "Активных сеансов нет."
    redeem(system, IVAN, "203.0.113.9", SHOP_KEY)
    shown = system.bot.ask("/sessions", IVAN)
    text = shown["text"]
    assert text.startswith("Активные сеансы: 1.")
    for part in ("1. shop.example", "использован: только что", "из сети 203.0.113.0/24"):
        assert part in text, text
    months = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
              "сентября", "октября", "ноября", "декабря")
    assert f"с {time.gmtime().tm_mday} {months[time.gmtime().tm_mon - 1]}" in text
    assert buttons(shown)[0]["text"].startswith("Завершить 1")
    older = system.bot.ask("/sessions", IVAN)
    answer, edited = tap(system, shown, end_data(shown)[0], IVAN)
    assert answer == "Сеанс «shop.example» завершён."
    assert edited["text"] == "Активных сеансов нет."
    answer, emptied = tap(system, older, end_data(older)[0], IVAN)
    assert answer == "Этот сеанс уже завершён."
    assert emptied["text"] == "Активных сеансов нет." and not buttons(emptied)
    assert "/sessions" in system.bot.ask("/help", IVAN)["text"]
    assert "/sessions" in system.bot.ask("/help", ANN)["text"]


def test_last_used_moves_on_with_use_at_most_once_a_minute(
    system: System, redis_server: RedisServer
) -> None:
    """/v1/me and userinfo note a use in the same script that reads the token; within
    the minute already noted nothing is written. The sessions are made to have begun
    two hours ago (their fields rewritten) instead of waiting."""
    api_token = redeem(system, ANN, "203.0.113.5", SHOP_KEY)
    oidc_token = oidc_tokens(system, ANN, "198.51.100.20")["access_token"]
    user_key = keys.user(ANN["id"])
    with redis_server.client() as client:

        def field(token: str) -> str:
            return str(client.hget(user_key, token_id(token)))

        for token in (api_token, oidc_token):
            expiry, lifetime, _, rest = field(token).split("|", 3)
            client.hset(user_key, token_id(token), f"{expiry}|{int(lifetime) + 120}|0|{rest}")
        assert system.bot.ask("/sessions", ANN)["text"].count("last used 2 hours ago") == 2
        assert me(system, api_token, SHOP_KEY) == 200
        assert userinfo(system, oidc_token) == 200
        noted = {token: field(token) for token in (api_token, oidc_token)}
        for token in noted:
            assert int(noted[token].split("|")[2]) in (120, 121), noted
        # used again and again within the minute: not one write to the user's hash
        assert _writes_to(client, user_key, lambda: [
            (me(system, api_token, SHOP_KEY), userinfo(system, oidc_token)) for _ in range(5)
        ]) == []
        assert {token: field(token) for token in noted} == noted
    text = system.bot.ask("/sessions", ANN)["text"]
    assert text.count("last used just now") == 2 and "hours ago" not in text


def _writes_to(client: Any, key: str, action: Any) -> list[str]:
    """The commands that changed `key` while `action` ran (keyspace notifications, those
    inside scripts included); read up to a marker written after it, so no wait is fixed."""
    client.config_set("notify-keyspace-events", "KA")
    pubsub = client.pubsub()
    try:
        pubsub.psubscribe("__keyspace@0__:*")
        wait_until(lambda: pubsub.get_message(timeout=0.1), what="the subscription")
        action()
        client.set("writes-marker", "1")
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message is None or message["type"] != "pmessage":
                continue
            if message["channel"].endswith(":writes-marker"):
                return seen
            if message["channel"] == f"__keyspace@0__:{key}":
                seen.append(message["data"])
        raise AssertionError("the marker's notification never came")
    finally:
        pubsub.close()
        client.config_set("notify-keyspace-events", "")


# -- one round trip for /v1/me ---------------------------------------------------------------


@pytest.fixture
def counting_proxy(redis_server: RedisServer) -> Iterator[tuple[TurnCounter, int]]:
    """A TurnCounter in front of the test's Redis, on its own loop in a thread, and its
    port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = TurnCounter(redis_server.port)
    port = asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(5)
    try:
        yield proxy, port
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_me_is_still_one_round_trip(
    system: System, start_api: ApiStarter, counting_proxy: tuple[TurnCounter, int],
) -> None:
    """The read that judges a token and notes its use is one script: one round trip, as
    issue 8's bench counts it. The fewest of several calls is taken: the API process's
    own background work (event delivery) may add turns to a call, never take one away,
    so a path of two round trips could never show 1."""
    token = redeem(system, ANN, "203.0.113.5", SHOP_KEY)
    proxy, port = counting_proxy
    counted = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=API_KEYS,
                        REDIS_URL=f"redis://127.0.0.1:{port}/0")
    turns = []
    with httpx.Client(base_url=counted.url, timeout=10) as http:
        headers = {**SHOP_KEY, "Authorization": f"Bearer {token}"}
        assert http.get("/v1/me", headers=headers).status_code == 200  # connections warm
        for _ in range(7):
            before = proxy.turns
            assert http.get("/v1/me", headers=headers).status_code == 200
            # the request reached Redis before its answer came back: counted already
            turns.append(proxy.turns - before)
    assert min(turns) == 1, turns


def test_sessions_on_a_cluster(
    start_bot: BotStarter, start_api: ApiStarter, cluster_env: dict[str, str],
) -> None:
    """On a Redis Cluster (scripts refused across slots): listing, noting a use, and
    End of an API session and of an OpenID Connect one (whose family key sits in the
    user's slot)."""
    bot = start_bot(cluster_env["REDIS_URL"], API_KEYS=API_KEYS, REDIS_CLUSTER="1")
    api = start_api(**cluster_env, AUTH_SECRET=AUTH_SECRET, API_KEYS=API_KEYS)
    settings = load_settings(env={"AUTH_SECRET": AUTH_SECRET, "API_KEYS": API_KEYS,
                                  **cluster_env}, env_file="/nonexistent")
    system = System(bot, api, settings)
    token = redeem(system, ANN, "203.0.113.5", SHOP_KEY)
    assert me(system, token, SHOP_KEY) == 200

    async def oidc_login(store: Store) -> Any:
        record = {"username": None, "last_name": None, "language_code": None, **ANN}
        grants = OidcGrants(store.redis, settings)
        code = await grants.create("shop", SHOP_CALLBACK, CHALLENGE, None, record,
                                   int(time.time()), "openid")
        return await grants.redeem(code, "shop", SHOP_CALLBACK, VERIFIER, "2001:db8::1")

    grant = run_on_store(settings, oidc_login)
    shown = bot.ask("/sessions", ANN)
    assert shown["text"].startswith("Active sessions: 2.") and "from 2001:db8::/48" in shown["text"]
    for data in end_data(shown):
        _, shown = tap(system, shown, data, ANN)
    assert shown["text"] == "No active sessions."
    assert me(system, token, SHOP_KEY) == 401

    async def refresh(store: Store) -> Any:
        return await OidcGrants(store.redis, settings).refresh(grant.refresh_token, "shop")

    with pytest.raises(InvalidGrant):
        run_on_store(settings, refresh)
