"""shared.store against a real Redis server: codes, redeem, tokens, limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.hashing import short_digest
from shared.logins import Logins
from shared.settings import ApiClient, Secret, Settings, load_settings
from shared.store import InvalidCode, RateLimited, Store, Unavailable, now_ms
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store

SECRET = "s" * 40
ANN = {"id": 1001, "username": "ann", "first_name": "Ann", "last_name": None, "language_code": "en"}


def make_settings(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={"AUTH_SECRET": SECRET, "REDIS_URL": redis_url, **env}, env_file="/nonexistent"
    )


def test_issue_then_redeem_once(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None and len(issued.code) == 8 and issued.code.isdigit()
        spaced = f"{issued.code[:4]} - {issued.code[4:]}"
        result = await store.redeem_code(spaced, "10.0.0.1")
        assert result.user == ANN
        assert result.access_token.startswith("tgl_")
        assert await store.token_user(result.access_token) == ANN
        with pytest.raises(InvalidCode):
            await store.redeem_code(issued.code, "10.0.0.1")

    run_on_store(make_settings(redis_url), body)


def test_new_code_voids_previous(redis_url: str) -> None:
    async def body(store: Store) -> None:
        first = await store.issue_code(ANN)
        second = await store.issue_code(ANN)
        assert first is not None and second is not None
        with pytest.raises(InvalidCode):
            await store.redeem_code(first.code, "10.0.0.1")
        assert (await store.redeem_code(second.code, "10.0.0.1")).user["id"] == ANN["id"]

    run_on_store(make_settings(redis_url), body)


def test_issue_limit_gives_wait_time(redis_url: str) -> None:
    async def body(store: Store) -> None:
        for _ in range(5):
            assert await store.issue_code(ANN) is not None
        with pytest.raises(RateLimited) as refused:
            await store.issue_code(ANN)
        assert 590 <= refused.value.retry_after <= 600
        # another user is not affected
        assert await store.issue_code({**ANN, "id": 1002}) is not None

    run_on_store(make_settings(redis_url), body)


def test_a_rehandled_update_gets_its_same_code_not_a_second(redis_url: str) -> None:
    async def body(store: Store) -> None:
        first = await store.issue_code(ANN, update_key="42:77:abc")
        assert first is not None
        again = await store.issue_code(ANN, update_key="42:77:abc")
        assert again is not None and again.code == first.code
        assert (await store.counters())["codes_issued"] == 1
        # the code is still live and redeems once
        redeemed = await store.redeem_code(first.code, "10.0.0.1")
        assert redeemed.user["id"] == ANN["id"]

    run_on_store(make_settings(redis_url), body)


def test_the_same_update_id_with_other_content_or_bot_is_a_new_update(redis_url: str) -> None:
    """A Bot API that starts its ids again, or a second bot, never looks like a duplicate."""

    async def body(store: Store) -> None:
        first = await store.issue_code(ANN, update_key="42:1:aaaa")
        restarted = await store.issue_code(ANN, update_key="42:1:bbbb")
        other_bot = await store.issue_code(ANN, update_key="43:1:aaaa")
        assert first and restarted and other_bot
        assert len({first.code, restarted.code, other_bot.code}) == 3
        assert (await store.counters())["codes_issued"] == 3

    run_on_store(make_settings(redis_url), body)


def test_a_rehandled_update_whose_code_was_replaced_sends_nothing(redis_url: str) -> None:
    async def body(store: Store) -> None:
        first = await store.issue_code(ANN, update_key="42:1:aaaa")
        newer = await store.issue_code(ANN, update_key="42:2:bbbb")
        assert first and newer
        assert await store.issue_code(ANN, update_key="42:1:aaaa") is None
        # the newer code is untouched, the replaced one stays void
        with pytest.raises(InvalidCode):
            await store.redeem_code(first.code, "10.0.0.1")
        assert (await store.redeem_code(newer.code, "10.0.0.1")).user["id"] == ANN["id"]

    run_on_store(make_settings(redis_url), body)


def test_failed_redeems_limit_the_address(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        for _ in range(3):
            with pytest.raises(InvalidCode):
                await store.redeem_code("00000000", "10.0.0.9")
        with pytest.raises(RateLimited) as limited:
            await store.redeem_code(issued.code, "10.0.0.9")
        assert 1 <= limited.value.retry_after <= 60
        # the code was not consumed by the refused attempt
        assert (await store.redeem_code(issued.code, "10.0.0.10")).user["id"] == ANN["id"]
        counters = await store.counters()
        assert counters["redeems_failed"] == 3
        assert counters["redeems_rate_limited"] == 1

    run_on_store(
        make_settings(redis_url, REDEEM_FAIL_LIMIT="3", REDEEM_FAIL_WINDOW_SECONDS="60"), body
    )


def test_expired_code_is_invalid(redis_url: str, redis_server: RedisServer) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        key = keys.code(short_digest(store.settings.auth_secret, "code", issued.code))
        with redis_server.client() as client:
            # the key outlives the code while it counts toward the issue limit (600 s)
            assert 300 < client.ttl(key) <= 600
            value = client.get(key)
            user, expiry, rest = value[1:].split("|", 2)
            assert user == str(ANN["id"]) and 0 < int(expiry) - now_ms() <= 300_000
            # what 300 s do
            client.set(key, f"L{user}|{now_ms() - 1}|{rest}", keepttl=True)
        with pytest.raises(InvalidCode):
            await store.redeem_code(issued.code, "10.0.0.1")

    run_on_store(make_settings(redis_url), body)


def test_revoke_token_and_user(redis_url: str) -> None:
    async def body(store: Store) -> None:
        tokens = []
        for _ in range(3):
            issued = await store.issue_code(ANN)
            assert issued is not None
            tokens.append((await store.redeem_code(issued.code, "10.0.0.1")).access_token)
        assert await store.revoke_token(tokens[0]) is True
        assert await store.revoke_token(tokens[0]) is False
        pending = await store.issue_code(ANN)
        assert pending is not None
        assert await store.revoke_user(ANN["id"]) == 2
        assert [await store.token_user(t) for t in tokens] == [None, None, None]
        with pytest.raises(InvalidCode):  # logout also voids the pending code
            await store.redeem_code(pending.code, "10.0.0.1")
        assert await store.revoke_user(ANN["id"]) == 0

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="10"), body)


def test_concurrent_redeems_exactly_one_wins(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        outcomes = await asyncio.gather(
            *(store.redeem_code(issued.code, f"10.1.{n // 250}.{n % 250}") for n in range(300)),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(wins) == 1
        assert {type(o) for o in outcomes if o not in wins} == {InvalidCode}, [
            o for o in outcomes if isinstance(o, Unavailable)
        ][:3]

    run_on_store(make_settings(redis_url), body)


def test_no_plain_code_or_token_in_redis(redis_url: str, redis_server: RedisServer) -> None:
    secrets: list[str] = []

    async def body(store: Store) -> None:
        for uid in range(2000, 2010):
            user = {**ANN, "id": uid}
            issued = await store.issue_code(user)
            assert issued is not None
            token = (await store.redeem_code(issued.code, "10.0.0.1")).access_token
            live = await store.issue_code(user)  # stays in Redis unredeemed
            assert live is not None
            secrets.extend([issued.code, live.code, token, token.removeprefix("tgl_")])
        await store.publish_bot_username("some_bot")
        logins = Logins(store)
        client = ApiClient(name="shop", key=Secret("shop-api-key-123"))
        for n in range(6):
            login = await logins.create(client, "state", "10.0.0.1")
            secrets.extend([login.id, login.payload])
            if n % 3:  # some pending, some approved and waiting, some delivered with a token
                await logins.decide(login.payload, {**ANN, "id": 2100 + n}, approve=True)
            if n % 3 == 2:
                result = await logins.poll(login.id, client)
                assert result is not None and result.redemption is not None
                secrets.append(result.redemption.access_token)
        secrets.append("shop-api-key-123")

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="10"), body)
    text = redis_server.dump()
    assert len(text.splitlines()) > 50  # codes, tokens, indexes, login requests are there ...
    assert text.count(keys.LOGIN_LINK) == 6 and text.count(keys.LOGIN + "{") == 4
    for secret in secrets:
        assert secret not in text  # ... but never a code, token, login id, payload or key


def test_redis_down_is_unavailable_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path)
    server.start()

    async def body(store: Store) -> None:
        assert await store.issue_code(ANN) is not None
        server.stop()
        with pytest.raises(Unavailable):
            await store.issue_code(ANN)
        with pytest.raises(Unavailable):
            await store.redeem_code("12345678", "10.0.0.1")
        with pytest.raises(Unavailable):
            await store.ping()
        server.start()
        issued = await store.issue_code(ANN)
        assert issued is not None
        assert (await store.redeem_code(issued.code, "10.0.0.1")).user["id"] == ANN["id"]

    try:
        run_on_store(make_settings(server.url), body)
    finally:
        server.stop()


# -- every multi-key operation stays in one hash slot ----------------------


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A cluster-mode server owning all 16384 slots: cross-slot operations fail
    there exactly as they would on a real Redis Cluster."""
    data = tmp_path_factory.mktemp("cluster")
    server = RedisServer(
        port=free_port(),
        data_dir=data,
        extra=(
            "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
            "--cluster-config-file", str(data / "nodes.conf"),
        ),
    )
    server.start()
    with server.client() as client:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(
            lambda: "cluster_state:ok" in client.execute_command("CLUSTER", "INFO"),
            what="cluster state ok",
        )
    yield server
    server.stop()


def test_cluster_node_rejects_cross_slot_scripts(cluster_node: RedisServer) -> None:
    """The check below is real: a script touching two slots is refused."""
    with cluster_node.client() as client, pytest.raises(redis.ResponseError, match="slot"):
        client.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, "{a}x", "{b}y")


def test_all_operations_run_on_a_cluster_node(cluster_node: RedisServer) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN, update_key="42:1:aaaa")
        assert issued is not None
        again = await store.issue_code(ANN, update_key="42:2:bbbb")
        assert again is not None
        redeemed = await store.redeem_code(again.code, "10.0.0.1")
        with pytest.raises(InvalidCode):
            await store.redeem_code(issued.code, "10.0.0.1")
        assert await store.token_user(redeemed.access_token) == ANN
        assert await store.revoke_token(redeemed.access_token)
        assert await store.revoke_user(ANN["id"]) == 0
        await store.publish_bot_username("b")
        assert (await store.counters())["codes_issued"] == 2

    run_on_store(make_settings(cluster_node.url, REDEEM_FAIL_LIMIT="100"), body)


def test_a_server_in_cluster_mode_reached_as_a_single_one_takes_the_two_steps(
    cluster_node: RedisServer,
) -> None:
    """REDIS_URL names a node in cluster mode without REDIS_CLUSTER=1: the node refuses
    the one-step script before running it (its keys are in several slots); that redeem,
    and every one after it, takes the two steps."""

    async def body(store: Store) -> None:
        assert store.codes._redeem is not None
        for n in range(2):
            issued = await store.issue_code(ANN)
            assert issued is not None
            assert (await store.redeem_code(issued.code, f"10.8.0.{n}")).user == ANN
            assert store.codes._redeem is None

    run_on_store(make_settings(cluster_node.url), body)


def test_login_operations_run_on_a_cluster_node(cluster_node: RedisServer) -> None:
    async def body(store: Store) -> None:
        await store.publish_bot_username("b")
        logins = Logins(store)
        for approve in (True, False):
            login = await logins.create(None, "s", "10.0.0.1")
            assert await logins.prompt(login.payload) is not None
            decision = await logins.decide(login.payload, ANN, approve)
            assert decision is not None and decision.outcome == "decided"
            result = await logins.poll(login.id, None)
            assert result is not None
            assert result.status == ("approved" if approve else "denied")
        counters = await store.counters()
        assert counters["login_requests_approved"] == counters["login_requests_denied"] == 1

    run_on_store(make_settings(cluster_node.url), body)


def test_full_width_digits_are_the_same_code(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        wide = "".join(chr(0xFF10 + int(d)) for d in issued.code)
        assert (await store.redeem_code(wide, "10.0.0.1")).user["id"] == ANN["id"]

    run_on_store(make_settings(redis_url), body)


def test_concurrent_guesses_stop_at_the_limit(redis_url: str) -> None:
    async def body(store: Store) -> None:
        outcomes = await asyncio.gather(
            *(store.redeem_code(f"{n:08d}", "10.0.0.7") for n in range(60)),
            return_exceptions=True,
        )
        assert sum(isinstance(o, InvalidCode) for o in outcomes) == 10
        assert sum(isinstance(o, RateLimited) for o in outcomes) == 50

    run_on_store(make_settings(redis_url), body)


def test_a_redis_that_may_evict_keys_is_warned_about(
    redis_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every key must live its TTL (revocations, codes' slots): a maxmemory-policy that
    evicts is logged at start; noeviction is quiet."""

    async def body(store: Store) -> None:
        with caplog.at_level(logging.WARNING, logger="shared.store"):
            await store.warn_if_evicting()
            assert not caplog.records
            with redis_server.client() as client:
                client.config_set("maxmemory-policy", "volatile-lru")
            try:
                await store.warn_if_evicting()
            finally:
                with redis_server.client() as client:
                    client.config_set("maxmemory-policy", "noeviction")
        (warning,) = caplog.records
        assert "volatile-lru" in warning.getMessage() and "noeviction" in warning.getMessage()

    run_on_store(make_settings(redis_url), body)
