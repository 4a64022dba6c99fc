"""shared.logins against a real Redis server: create, decide once, deliver once, notify."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

import pytest

from shared import keys
from shared.logins import (
    MATCH_HIGH,
    MATCH_LOW,
    Authorization,
    CreatedAuthorization,
    Logins,
    NoBotUsername,
    client_id,
    decisions,
)
from shared.settings import ApiClient, Secret, Settings, load_settings
from shared.store import RateLimited
from tests.fixtures.common import free_port
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_logins

SECRET = "l" * 40
ANN = {"id": 1001, "username": "ann", "first_name": "Ann", "last_name": None, "language_code": "en"}
BOB = {**ANN, "id": 1002, "username": "bob", "first_name": "Bob"}
SHOP = ApiClient(name="shop.example", key=Secret("shop-key-0123456789abcdefgh"))
BLOG = ApiClient(name="blog.example", key=Secret("blog-key-0123456789abcdefgh"))
PAGE = Authorization(
    client_id="shop", client_name="Shop", host="shop.example",
    redirect_uri="https://shop.example/cb", code_challenge="c" * 43, nonce=None,
    scope="openid", state="st",
)


def make_settings(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={
            "AUTH_SECRET": SECRET,
            "REDIS_URL": redis_url,
            "TELEGRAM_BOT_USERNAME": "login_bot",
            **env,
        },
        env_file="/nonexistent",
    )


def test_approve_is_delivered_once_with_a_working_token(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(SHOP, "s-1", "10.0.0.1")
        assert created.deep_link == f"https://t.me/login_bot?start={created.payload}"
        assert created.start_command == f"/start {created.payload}"
        assert created.id != created.payload and len(created.id) == len(created.payload) == 22
        pending = await logins.poll(created.id, SHOP)
        assert pending is not None and pending.status == "pending"
        assert pending.expires_in is not None and 295 <= pending.expires_in <= 300

        prompt = await logins.prompt(created.payload)
        assert prompt is not None
        assert (prompt.client_name, prompt.status) == ("shop.example", "pending")
        decision = await logins.decide(created.payload, ANN, approve=True)
        assert decision is not None
        assert (decision.outcome, decision.status, decision.client_name) == (
            "decided", "approved", "shop.example",
        )
        # the payload never reads the result, before or after delivery
        assert await logins.poll(created.payload, SHOP) is None
        approved = await logins.poll(created.id, SHOP)
        assert approved is not None and approved.status == "approved"
        assert approved.state == "s-1"
        assert approved.redemption is not None and approved.redemption.user == ANN
        token = approved.redemption.access_token
        assert await logins.store.token_user(token, SHOP) == ANN
        assert await logins.store.token_user(token) is None  # another client's (the open API)
        assert await logins.poll(created.id, SHOP) is None  # delivered: gone
        assert await logins.store.revoke_user(ANN["id"]) == 1  # /logout ends it too
        counters = await logins.store.counters()
        assert counters["login_requests_created"] == 1
        assert counters["login_requests_approved"] == 1

    run_on_logins(make_settings(redis_url), body)


def test_deny_is_final_and_readable_until_it_expires(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(None, None, "10.0.0.1")
        prompt = await logins.prompt(created.payload)
        assert prompt is not None and prompt.client_name == ""  # open API: no name
        denied = await logins.decide(created.payload, ANN, approve=False)
        assert denied is not None and (denied.outcome, denied.status) == ("decided", "denied")
        late = await logins.decide(created.payload, BOB, approve=True)
        assert late is not None and (late.outcome, late.status) == ("already", "denied")
        for _ in range(2):
            result = await logins.poll(created.id, None)
            assert result is not None and result.status == "denied"
        prompt = await logins.prompt(created.payload)
        assert prompt is not None and prompt.status == "denied"
        assert (await logins.store.counters())["login_requests_denied"] == 1

    run_on_logins(make_settings(redis_url), body)


def test_the_same_users_repeated_tap_is_the_same_answer(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(None, None, "10.0.0.1")
        first = await logins.decide(created.payload, ANN, approve=True)
        again = await logins.decide(created.payload, ANN, approve=True)
        assert first == again and again is not None and again.outcome == "decided"
        assert (await logins.store.counters())["login_requests_approved"] == 1

    run_on_logins(make_settings(redis_url), body)


def test_concurrent_approvals_exactly_one_wins(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(SHOP, None, "10.0.0.1")
        users = [{**ANN, "id": 3000 + n} for n in range(50)]
        outcomes = await asyncio.gather(
            *(logins.decide(created.payload, user, approve=n % 2 == 0)
              for n, user in enumerate(users))
        )
        decided = [d for d in outcomes if d is not None and d.outcome == "decided"]
        assert len(decided) == 1
        assert all(d is not None and d.status == decided[0].status for d in outcomes)
        result = await logins.poll(created.id, SHOP)
        assert result is not None and result.status == decided[0].status

    run_on_logins(make_settings(redis_url), body)


def test_another_clients_request_is_not_found(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(SHOP, None, "10.0.0.1")
        assert await logins.poll(created.id, BLOG) is None
        assert await logins.poll(created.id, None) is None
        result = await logins.poll(created.id, SHOP)
        assert result is not None and result.status == "pending"
        assert client_id(logins.settings, SHOP) != client_id(logins.settings, BLOG)

    run_on_logins(make_settings(redis_url), body)


def test_expired_request_and_link_are_unknown(redis_url: str, redis_server: RedisServer) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(None, None, "10.0.0.1")
        with redis_server.client() as client:
            found = [
                *client.scan_iter(match=keys.LOGIN_LINK + "*"),
                *client.scan_iter(match=keys.LOGIN + "{*"),
            ]
            assert len(found) == 2 and all(0 < client.ttl(k) <= 300 for k in found)
            client.delete(*found)  # what expiry does
        assert await logins.prompt(created.payload) is None
        assert await logins.decide(created.payload, ANN, approve=True) is None
        assert await logins.poll(created.id, None) is None
        for malformed in ("", "x", "a" * 65, "../../etc", "has space in it 1234"):
            assert await logins.prompt(malformed) is None
            assert await logins.poll(malformed, None) is None

    run_on_logins(make_settings(redis_url), body)


def test_no_bot_username_until_one_is_published(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        with pytest.raises(NoBotUsername):
            await logins.create(None, None, "10.0.0.1")
        await logins.store.publish_bot_username("published_bot")
        created = await logins.create(None, None, "10.0.0.1")
        assert created.deep_link.startswith("https://t.me/published_bot?start=")

    run_on_logins(make_settings(redis_url, TELEGRAM_BOT_USERNAME=""), body)


def test_creation_is_limited_per_address(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        for _ in range(3):
            await logins.create(None, None, "10.0.0.1")
        with pytest.raises(RateLimited) as limited:
            await logins.create(None, None, "10.0.0.1")
        assert 1 <= limited.value.retry_after <= 60
        await logins.create(None, None, "10.0.0.2")  # another address is not affected

    run_on_logins(make_settings(redis_url, LOGIN_REQUEST_LIMIT="3"), body)


def test_decisions_feed_announces_each_decision(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(None, None, "10.0.0.1")
        async with aclosing(decisions(logins.settings)) as feed:
            assert await anext(feed) is None  # subscribed
            await logins.decide(created.payload, ANN, approve=True)
            heard = await asyncio.wait_for(anext(feed), 5)
        assert heard == logins.id_hash(created.id)

    run_on_logins(make_settings(redis_url), body)


def test_decisions_feed_over_a_unix_socket(tmp_path: Path) -> None:
    """`make run`'s private Redis listens on a unix socket; the feed must work there too."""
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        port=free_port(), data_dir=tmp_path / "data",
        extra=("--unixsocket", str(sock), "--unixsocketperm", "700"),
    )
    server.start()
    try:
        settings = make_settings(f"unix://{sock}")

        async def body(logins: Logins) -> None:
            created = await logins.create(None, None, "10.0.0.1")
            async with aclosing(decisions(settings)) as feed:
                assert await anext(feed) is None
                await logins.decide(created.payload, ANN, approve=False)
                assert await asyncio.wait_for(anext(feed), 5) == logins.id_hash(created.id)

        run_on_logins(settings, body)
    finally:
        server.stop()


# -- number matching: an authorization page's requests -----------------------------------


def other_number(match: int) -> int:
    return MATCH_LOW if match != MATCH_LOW else MATCH_HIGH


async def authorize(logins: Logins) -> CreatedAuthorization:
    created = await logins.create_authorization(PAGE, "10.0.0.1")
    assert MATCH_LOW <= created.match <= MATCH_HIGH
    prompt = await logins.prompt(created.login.payload)
    assert prompt is not None
    assert (prompt.client_name, prompt.host, prompt.match) == ("Shop", "shop.example",
                                                               created.match)
    return created


def test_the_page_number_approves(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await authorize(logins)
        decision = await logins.decide(created.login.payload, ANN, True, created.match)
        assert decision is not None
        assert (decision.outcome, decision.status, decision.mismatch) == (
            "decided", "approved", False,
        )
        assert (decision.client_name, decision.host) == ("Shop", "shop.example")
        result = await logins.poll_authorization(created.login.id)
        assert result is not None and result.status == "approved"
        assert result.user is not None and result.user["id"] == ANN["id"]
        assert result.authorization == PAGE
        assert (await logins.store.counters())["login_requests_approved"] == 1

    run_on_logins(make_settings(redis_url), body)


@pytest.mark.parametrize("wrong", ["other", "none"])
def test_any_other_approval_denies_for_good(redis_url: str, wrong: str) -> None:
    """A wrong number, or an Approve with no number (a forged callback), denies: the
    right number after it is too late, so a relaying page gets no second try."""

    async def body(logins: Logins) -> None:
        created = await authorize(logins)
        pick = other_number(created.match) if wrong == "other" else None
        decision = await logins.decide(created.login.payload, ANN, True, pick)
        assert decision is not None
        assert (decision.outcome, decision.status, decision.mismatch) == (
            "decided", "denied", True,
        )
        again = await logins.decide(created.login.payload, ANN, True, pick)  # redelivered
        assert again == decision
        late = await logins.decide(created.login.payload, ANN, True, created.match)
        assert late is not None and (late.outcome, late.status) == ("already", "denied")
        result = await logins.poll_authorization(created.login.id)
        assert result is not None and result.status == "denied" and result.user is None
        counters = await logins.store.counters()
        assert counters["login_requests_denied"] == 1
        assert counters.get("login_requests_approved", 0) == 0

    run_on_logins(make_settings(redis_url), body)


def test_deny_on_a_numbered_request_is_a_plain_denial(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await authorize(logins)
        decision = await logins.decide(created.login.payload, ANN, False)
        assert decision is not None
        assert (decision.outcome, decision.status, decision.mismatch) == (
            "decided", "denied", False,
        )
        result = await logins.poll_authorization(created.login.id)
        assert result is not None and result.status == "denied"

    run_on_logins(make_settings(redis_url), body)


def test_a_pick_means_nothing_to_a_request_without_a_number(redis_url: str) -> None:
    async def body(logins: Logins) -> None:
        created = await logins.create(SHOP, None, "10.0.0.1")
        prompt = await logins.prompt(created.payload)
        assert prompt is not None and prompt.match is None and prompt.host == ""
        decision = await logins.decide(created.payload, ANN, True, 42)
        assert decision is not None
        assert (decision.outcome, decision.status, decision.mismatch, decision.host) == (
            "decided", "approved", False, "",
        )

    run_on_logins(make_settings(redis_url), body)
