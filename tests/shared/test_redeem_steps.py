"""A redeem on a single server is one script and one round trip (code_redeem.lua); a
Cluster, or an address not admitted at once, takes the two steps (admit and look up, then
consume, list and settle). Against a real Redis, both paths give the same answers, leave
the same state and emit the same event; the one-step path is counted by a proxy. (A
server in cluster mode reached as a single one: tests/shared/test_store.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.exceptions import ResponseError

from shared import keys
from shared.codes import refuses_keys
from shared.counters import Counter
from shared.hashing import short_digest
from shared.limits import address_hash
from shared.redis import scripts
from shared.settings import ApiClient, Secret, Settings
from shared.store import InvalidCode, RateLimited, Store
from shared.tokens import parse_field, unseal
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store
from tests.fixtures.turns import TurnCounter
from tests.shared.test_store import ANN, SECRET, make_settings

SHOP = ApiClient("shop.example", Secret("shop-key-0123456789abcdefgh"))
PATHS = pytest.mark.parametrize("one_step", [True, False], ids=["one step", "two steps"])


def _choose(store: Store, one_step: bool) -> None:
    if not one_step:
        store.codes._redeem = None  # as on a Cluster
    assert (store.codes._redeem is not None) == one_step


async def _issue(store: Store, one_step: bool) -> str:
    """A live code of ANN's, redeemed on the path chosen."""
    _choose(store, one_step)
    issued = await store.issue_code(ANN)
    assert issued is not None
    return issued.code


async def _failures(store: Store, address: str) -> int:
    hashed = address_hash(store.settings, address)
    return int(await store.redis.get(keys.redeem_fails(hashed)) or 0)


async def _in_flight(store: Store, address: str) -> int:
    return int(await store.redis.zcard(keys.redeem_pending(address_hash(store.settings, address))))


async def _code_state(store: Store, code: str) -> str:
    value = await store.redis.get(keys.code(short_digest(Secret(SECRET), "code", code)))
    return str(value)[0]


def test_a_redeem_is_one_round_trip_on_a_single_server(redis_server: RedisServer) -> None:
    """Counted by a proxy in front of Redis: one exchange for the one-step redeem, two for
    the two steps, with a valid code each time."""

    async def body() -> dict[bool, int]:
        proxy = TurnCounter(redis_server.port)
        settings = make_settings(f"redis://127.0.0.1:{await proxy.start()}/0")
        seen: dict[bool, int] = {}
        try:
            for one_step in (True, False):
                store = Store.from_settings(settings)
                try:
                    _choose(store, one_step)
                    issued = await store.issue_code(ANN)
                    assert issued is not None
                    before = proxy.turns
                    redemption = await store.redeem_code(issued.code, "10.1.0.1")
                    seen[one_step] = proxy.turns - before
                    assert redemption.user == ANN
                finally:
                    await store.close()
        finally:
            await proxy.close()
        return seen

    assert asyncio.run(body()) == {True: 1, False: 2}


def test_an_address_over_its_limit_is_refused_without_a_second_try(
    redis_server: RedisServer,
) -> None:
    """Refused by the one-step script, a redeem is answered at once: that round trip and
    the count of refusals, nothing more (a flood of refused guesses costs no extra work)."""

    async def body() -> int:
        proxy = TurnCounter(redis_server.port)
        url = f"redis://127.0.0.1:{await proxy.start()}/0"
        store = Store.from_settings(make_settings(url, REDEEM_FAIL_LIMIT="1"))
        try:
            with pytest.raises(InvalidCode):
                await store.redeem_code("00000000", "10.1.1.1")
            before = proxy.turns
            with pytest.raises(RateLimited):
                await store.redeem_code("00000001", "10.1.1.1")
            return proxy.turns - before
        finally:
            await store.close()
            await proxy.close()

    assert asyncio.run(body()) == 2


@PATHS
def test_a_redeem_lists_its_token_counts_it_and_spends_nothing(
    redis_url: str, one_step: bool
) -> None:
    async def body(store: Store) -> None:
        code = await _issue(store, one_step)
        before = (await store.counters()).get(Counter.CODES_REDEEMED, 0)
        redemption = await store.redeem_code(f" {code[:4]}-{code[4:]} ", "10.2.0.7")
        assert redemption.user == ANN
        assert redemption.expires_in == store.settings.token_ttl_seconds
        assert await store.token_user(redemption.access_token) == ANN
        claims = unseal(Secret(SECRET), redemption.access_token)
        assert claims is not None
        hash_ = await store.redis.hgetall(keys.user(ANN["id"]))
        listed = parse_field(claims.token_id, hash_[claims.token_id])
        assert listed is not None and listed.expires == claims.expires
        assert listed.network == "10.2.0.0/24" and listed.client == ""
        assert json.loads(hash_["r"]) == ["ann", "Ann", None, "en"]
        assert 0 < await store.redis.ttl(keys.user(ANN["id"])) <= store.settings.token_ttl_seconds
        assert (await store.counters())[Counter.CODES_REDEEMED] == before + 1
        assert await _failures(store, "10.2.0.7") == 0
        assert await _in_flight(store, "10.2.0.7") == 0
        assert await _code_state(store, code) == "S"

    run_on_store(make_settings(redis_url), body)


@PATHS
def test_a_used_or_unknown_code_spends_a_failure(redis_url: str, one_step: bool) -> None:
    async def body(store: Store) -> None:
        code = await _issue(store, one_step)
        await store.redeem_code(code, "10.3.0.1")
        before = await store.counters()
        with pytest.raises(InvalidCode):
            await store.redeem_code(code, "10.3.0.1")
        wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
        with pytest.raises(InvalidCode):
            await store.redeem_code(wrong, "10.3.0.1")
        assert await _failures(store, "10.3.0.1") == 2
        assert await _in_flight(store, "10.3.0.1") == 0
        after = await store.counters()
        assert after.get(Counter.REDEEMS_FAILED, 0) == before.get(Counter.REDEEMS_FAILED, 0) + 2
        assert after[Counter.CODES_REDEEMED] == before[Counter.CODES_REDEEMED]

    run_on_store(make_settings(redis_url), body)


@PATHS
def test_a_code_issued_before_a_logout_is_spent_without_a_token_or_a_failure(
    redis_url: str, one_step: bool
) -> None:
    async def body(store: Store) -> None:
        code = await _issue(store, one_step)
        # /logout raises the generation; its voiding of the live code is undone here, as
        # when the code was issued in the moment between the logout's two writes
        key = keys.code(short_digest(Secret(SECRET), "code", code))
        value = await store.redis.get(key)
        await store.revoke_user(ANN["id"])
        await store.redis.set(key, value, keepttl=True)
        before = (await store.counters()).get(Counter.CODES_REDEEMED, 0)
        with pytest.raises(InvalidCode):
            await store.redeem_code(code, "10.4.0.1")
        assert await _failures(store, "10.4.0.1") == 0
        assert await _in_flight(store, "10.4.0.1") == 0
        assert await _code_state(store, code) == "S"
        fields = await store.redis.hkeys(keys.user(ANN["id"]))
        assert set(fields) <= {"r", "g"}, fields
        assert (await store.counters()).get(Counter.CODES_REDEEMED, 0) == before

    run_on_store(make_settings(redis_url), body)


@PATHS
def test_an_address_at_its_limit_is_refused_and_the_code_stays_live(
    redis_url: str, one_step: bool
) -> None:
    async def body(store: Store) -> None:
        code = await _issue(store, one_step)
        for wrong in ("00000000", "00000001"):
            with pytest.raises(InvalidCode):
                await store.redeem_code(wrong, "10.5.0.1")
        limited = (await store.counters()).get(Counter.REDEEMS_RATE_LIMITED, 0)
        with pytest.raises(RateLimited) as refused:
            await store.redeem_code(code, "10.5.0.1")
        assert 1 <= refused.value.retry_after <= store.settings.redeem_fail_window_seconds
        assert (await store.counters())[Counter.REDEEMS_RATE_LIMITED] == limited + 1
        assert await _code_state(store, code) == "L"
        assert (await store.redeem_code(code, "10.5.0.2")).user == ANN

    settings = make_settings(redis_url, REDEEM_FAIL_LIMIT="2", CODE_LENGTH="8")
    run_on_store(settings, body)


@PATHS
def test_an_api_clients_redeem_emits_code_redeemed_with_its_wake(
    redis_url: str, one_step: bool
) -> None:
    async def body(store: Store) -> tuple[list[Any], list[Any]]:
        code = await _issue(store, one_step)
        wakes = await store.redis.xrange(keys.EVENT_WAKE)
        redemption = await store.redeem_code(code, "10.6.0.1", SHOP)
        claims = unseal(Secret(SECRET), redemption.access_token)
        assert claims is not None
        events = await store.redis.xrange(keys.events(ANN["id"]))
        assert len(events) == 1
        fields = events[0][1]
        assert fields["t"] == "code.redeemed" and fields["c"] == SHOP.name
        assert json.loads(fields["d"]) == {"user": ANN, "session": claims.token_id}
        assert int(fields["ts"]) // 1000 == claims.expires - store.settings.token_ttl_seconds
        new_wakes = [w for w in await store.redis.xrange(keys.EVENT_WAKE) if w not in wakes]
        return new_wakes, events

    new_wakes, events = run_on_store(make_settings(redis_url), body)
    assert [fields for _, fields in new_wakes] == [{"u": str(ANN["id"])}]
    # the wake is no later than its event (the deliverer's grace counts from it)
    assert int(new_wakes[0][0].split("-")[0]) <= int(events[0][0].split("-")[0])


def test_the_one_step_events_data_parses_as_the_two_steps_for_any_name(redis_url: str) -> None:
    """The event's data made in Lua (lib_user_json.lua, as the events of other scripts
    are) parses to the same value as Python's, with quotes, slashes, backslashes, control
    and non-ASCII characters in the names (the texts differ: cjson writes `/` as `\\/`)."""
    odd = {"id": 1002, "username": None, "first_name": 'Zoë "Z" /\\ \u0007 \u2028 🦊',
           "last_name": "</script>", "language_code": "ru"}

    async def body(store: Store) -> list[Any]:
        seen = []
        for one_step in (True, False):
            _choose(store, one_step)
            issued = await store.issue_code(odd)
            assert issued is not None
            await store.redeem_code(issued.code, "10.7.0.1", SHOP)
            seen.append(json.loads((await store.redis.xrange(keys.events(1002)))[-1][1]["d"]))
        return seen

    made_once, made_twice = run_on_store(make_settings(redis_url), body)
    assert made_once["user"] == made_twice["user"] == odd


def test_a_cluster_client_takes_the_two_steps(cluster_env: dict[str, str]) -> None:
    settings: Settings = make_settings(cluster_env["REDIS_URL"], REDIS_CLUSTER="1")

    async def body(store: Store) -> None:
        assert store.codes._redeem is None
        issued = await store.issue_code(ANN)
        assert issued is not None
        assert (await store.redeem_code(issued.code, "10.9.0.1", SHOP)).user == ANN

    run_on_store(settings, body)


def test_the_scripts_user_keys_are_the_key_schemas() -> None:
    """code_redeem.lua makes a user's keys as `before_user_id(prefix)`, the id and "}"."""
    for uid in (1, 1001, 9_007_199_254_740_993):
        assert keys.before_user_id(keys.USER) + f"{uid}}}" == keys.user(uid)
        assert keys.before_user_id(keys.EVENTS) + f"{uid}}}" == keys.events(uid)


def test_a_server_refuses_the_one_step_redeem_before_it_writes(
    cluster_env: dict[str, str],
) -> None:
    """code_redeem.lua on one node of a real Cluster, every declared key in a slot of that
    node: the user's hash, in another node's slot and not declared, is refused at its first
    read, and nothing was written (the code is still live, no attempt in flight, nothing
    counted): a process that falls back to the two steps then loses nothing."""
    settings = make_settings(cluster_env["REDIS_URL"])

    async def body(store: Store) -> None:
        node = store.redis

        async def local(tag: str) -> bool:  # a node answers MOVED for another's slot
            try:
                await node.exists(f"{{{tag}}}")
            except ResponseError:
                return False
            return True

        tags = [t for t in (f"x{n}" for n in range(50)) if await local(t)]
        uids = [u for u in range(1001, 1050) if not await local(f"u{u}")]
        tag, uid = tags[0], uids[0]
        code_key = f"{{{tag}}}code"
        value = f"L{uid}|{2 ** 50}|-|0|[\"ann\",\"Ann\",null,\"en\"]"
        await node.set(code_key, value)
        script = scripts(node).get("code_redeem.lua")
        declared = [f"{{{tag}}}fails", f"{{{tag}}}pending", code_key, f"{{{tag}}}stats"]
        with pytest.raises(ResponseError) as refused:
            await script(keys=declared, args=[
                1_000, 5, "a1", 10_000, 60_000, keys.before_user_id(keys.USER), "t1", 60, "",
                "codes_redeemed"])
        assert refuses_keys(refused.value), refused.value
        assert await node.get(code_key) == value
        assert await node.exists(*declared[:2], declared[3]) == 0

    run_on_store(settings, body)
