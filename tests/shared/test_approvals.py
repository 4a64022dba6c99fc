"""shared.approvals against a real Redis server: create for known users, decide once, expire,
limits, the queue the bot fleet reads, and what Redis holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import pytest

from shared import keys
from shared.approvals import ApprovalQueue, Approvals, UnknownUser, approval_id, parse_id
from shared.logins import MATCH_HIGH, MATCH_LOW, decisions
from shared.settings import ApiClient, Secret, Settings, SettingsError, load_settings
from shared.store import RateLimited, Store
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store

SECRET = "p" * 40
ANN = {"id": 1001, "username": "ann", "first_name": "Ann", "last_name": None, "language_code": "en"}
BOB = {**ANN, "id": 1002, "username": "bob", "first_name": "Bob"}
SHOP = ApiClient(name="shop.example", key=Secret("shop-key-0123456789abcdefgh"))
BLOG = ApiClient(name="blog.example", key=Secret("blog-key-0123456789abcdefgh"))


def make_settings(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={"AUTH_SECRET": SECRET, "REDIS_URL": redis_url, **env}, env_file="/nonexistent"
    )


def run(settings: Settings, body: Callable[[Store, Approvals], Awaitable[None]]) -> None:
    async def with_known_users(store: Store) -> None:
        for user in (ANN, BOB):  # as a login records them
            await store.sessions.enter(user)
        await body(store, Approvals(store.redis, settings))

    run_on_store(settings, with_known_users)


def test_approve_once_then_later_taps_say_so(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay 10 EUR", "s-1", False)
        assert parse_id(created.id) == ANN["id"] and created.match_number is None
        assert created.expires_in == 300
        pending = await approvals.status(created.id, SHOP)
        assert pending is not None and pending.status == "pending" and pending.state == "s-1"
        assert pending.expires_in is not None and 295 <= pending.expires_in <= 300
        key_hash = approvals.key_hash(created.id)
        prompt = await approvals.prompt(ANN["id"], key_hash)
        assert prompt is not None
        assert (prompt.client_name, prompt.text, prompt.language_code) == (
            "shop.example", "Pay 10 EUR", "en",
        )
        first = await approvals.decide(ANN, key_hash, approve=True)
        assert first is not None and (first.outcome, first.status) == ("decided", "approved")
        again = await approvals.decide(ANN, key_hash, approve=True)
        assert again is not None and again.outcome == "decided"  # a redelivered tap
        late = await approvals.decide(ANN, key_hash, approve=False)
        assert late is not None and (late.outcome, late.status) == ("already", "approved")
        for _ in range(2):  # read as often as the client likes
            result = await approvals.status(created.id, SHOP)
            assert result is not None and result.status == "approved"
            assert result.user == ANN and result.state == "s-1"
        assert await approvals.prompt(ANN["id"], key_hash) is None  # nothing to send now
        counters = await store.counters()
        assert counters["approvals_created"] == 1 and counters["approvals_approved"] == 1

    run(make_settings(redis_url), body)


def test_only_the_approvals_user_decides(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        key_hash = approvals.key_hash(created.id)
        assert await approvals.decide(BOB, key_hash, approve=True) is None
        result = await approvals.status(created.id, SHOP)
        assert result is not None and result.status == "pending"

    run(make_settings(redis_url), body)


def test_unknown_users_another_clients_and_forged_ids(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        with pytest.raises(UnknownUser):
            await approvals.create(SHOP, 4242, "Pay", None, False)
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        assert await approvals.status(created.id, BLOG) is None
        assert await approvals.status(created.id, None) is None
        _, rest = created.id.split(".")
        assert await approvals.status(f"{BOB['id']}.{rest}", SHOP) is None
        for junk in ("", "x", "0.abc", rest, f"{ANN['id']}.{rest}x", "1001." + "a" * 21):
            assert await approvals.status(junk, SHOP) is None

    run(make_settings(redis_url), body)


def test_a_numbered_approval_needs_its_number(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        right = await approvals.create(SHOP, ANN["id"], "New device", None, True)
        number = right.match_number
        assert number is not None and MATCH_LOW <= number <= MATCH_HIGH
        prompt = await approvals.prompt(ANN["id"], approvals.key_hash(right.id))
        assert prompt is not None and prompt.match == number
        decided = await approvals.decide(ANN, approvals.key_hash(right.id), True, number)
        assert decided is not None and decided.status == "approved" and not decided.mismatch

        wrong = await approvals.create(SHOP, ANN["id"], "New device", None, True)
        assert wrong.match_number is not None
        other = MATCH_LOW if wrong.match_number != MATCH_LOW else MATCH_HIGH
        for pick in (other, None):  # a wrong number, or a forged plain Approve
            again = await approvals.create(SHOP, ANN["id"], "New device", None, True)
            denied = await approvals.decide(ANN, approvals.key_hash(again.id), True, pick)
            assert denied is not None and (denied.status, denied.mismatch) == ("denied", True)
            result = await approvals.status(again.id, SHOP)
            assert result is not None and result.status == "denied"

    run(make_settings(redis_url, APPROVAL_USER_LIMIT="10"), body)


def test_expired_until_the_record_is_gone(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        key_hash = approvals.key_hash(created.id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            result = await approvals.status(created.id, SHOP)
            assert result is not None
            if result.status == "expired":
                break
            assert loop.time() < deadline, "not expired after its lifetime"
            await asyncio.sleep(0.2)
        late = await approvals.decide(ANN, key_hash, approve=True)
        assert late is not None and (late.outcome, late.status) == ("expired", "expired")
        assert await approvals.prompt(ANN["id"], key_hash) is None
        ttl = await store.redis.pttl(keys.approval(ANN["id"], key_hash))
        assert 0 < ttl <= 2000  # gone after as long again

    run(make_settings(redis_url, APPROVAL_TTL_SECONDS="2"), body)


def test_undeliverable_wakes_and_is_final(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        key_hash = approvals.key_hash(created.id)
        async with aclosing(decisions(approvals.settings)) as feed:
            assert await anext(feed) is None  # subscribed
            assert await approvals.undeliverable(ANN["id"], key_hash)
            assert await asyncio.wait_for(anext(feed), 5) == key_hash
        result = await approvals.status(created.id, SHOP)
        assert result is not None and result.status == "undeliverable"
        assert await approvals.decide(ANN, key_hash, approve=True) is not None
        result = await approvals.status(created.id, SHOP)
        assert result is not None and result.status == "undeliverable"

    run(make_settings(redis_url), body)


def test_per_user_limit_is_per_client(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        await approvals.create(SHOP, ANN["id"], "one", None, False)
        await approvals.create(SHOP, ANN["id"], "two", None, False)
        with pytest.raises(RateLimited) as refused:
            await approvals.create(SHOP, ANN["id"], "three", None, False)
        assert 1 <= refused.value.retry_after <= 600
        # one client's spent budget never refuses another client's approval for the user
        await approvals.create(BLOG, ANN["id"], "genuine", None, False)
        await approvals.create(BLOG, ANN["id"], "genuine again", None, False)
        await approvals.create(SHOP, BOB["id"], "for Bob", None, False)  # another user's
        with pytest.raises(RateLimited):  # a refusal spends nothing
            await approvals.create(SHOP, ANN["id"], "four", None, False)

    run(make_settings(redis_url, APPROVAL_USER_LIMIT="2"), body)


def test_per_user_total_limit_across_clients(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        await approvals.create(SHOP, ANN["id"], "one", None, False)
        await approvals.create(BLOG, ANN["id"], "two", None, False)
        await approvals.create(None, ANN["id"], "three", None, False)  # the open API
        for client in (SHOP, BLOG, None):  # each has budget left, the user has none
            with pytest.raises(RateLimited) as refused:
                await approvals.create(client, ANN["id"], "more", None, False)
            assert 1 <= refused.value.retry_after <= 600
        await approvals.create(SHOP, BOB["id"], "for Bob", None, False)  # another user's

    run(make_settings(redis_url, APPROVAL_USER_LIMIT="2", APPROVAL_USER_TOTAL_LIMIT="3"),
        body)


def test_retry_after_waits_for_every_full_window(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        await approvals.create(SHOP, ANN["id"], "one", None, False)
        total = keys.approval_user_count(ANN["id"])
        await store.redis.expire(total, 500)  # the all-clients window ends later
        with pytest.raises(RateLimited) as refused:
            await approvals.create(SHOP, ANN["id"], "two", None, False)
        assert 450 < refused.value.retry_after <= 500

    run(make_settings(redis_url, APPROVAL_USER_LIMIT="1", APPROVAL_USER_TOTAL_LIMIT="1",
                      APPROVAL_USER_WINDOW_SECONDS="100"), body)


def test_total_limit_setting_is_validated() -> None:
    assert make_settings("redis://127.0.0.1:6379/0").approval_user_total_limit == 30
    for bad in ("0", "many", "100001"):
        with pytest.raises(SettingsError) as refused:
            make_settings("redis://127.0.0.1:6379/0", APPROVAL_USER_TOTAL_LIMIT=bad)
        assert "APPROVAL_USER_TOTAL_LIMIT" in str(refused.value)
        assert "\n" not in str(refused.value)


def test_per_client_limit_counts_unknown_users_too(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        await approvals.create(SHOP, ANN["id"], "one", None, False)
        with pytest.raises(UnknownUser):  # probing who uses the bot spends the budget
            await approvals.create(SHOP, 4242, "who?", None, False)
        with pytest.raises(RateLimited) as refused:
            await approvals.create(SHOP, BOB["id"], "two", None, False)
        assert 1 <= refused.value.retry_after <= 60
        await approvals.create(BLOG, BOB["id"], "another client", None, False)

    run(make_settings(redis_url, APPROVAL_CLIENT_LIMIT="2",
                      APPROVAL_CLIENT_WINDOW_SECONDS="60"), body)


def test_queue_hands_each_entry_to_one_consumer(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        first, second = ApprovalQueue(store.redis, "bot-1"), ApprovalQueue(store.redis, "bot-2")
        await first.ensure_group()
        await second.ensure_group()  # a second process: the same group
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        entries = await first.read(10, 100)
        assert [(u, h) for _, u, h in entries] == [(ANN["id"], approvals.key_hash(created.id))]
        assert await second.read(10, 100) == []
        assert await second.claim(10) == []  # not idle long enough to take over
        await first.done(entries[0][0])
        assert await store.redis.xlen(keys.APPROVAL_QUEUE) == 0
        assert await first.forget_gone_consumers() == 0

    run(make_settings(redis_url), body)


def test_redis_holds_no_approval_id(redis_url: str, redis_server: RedisServer) -> None:
    ids: list[str] = []

    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, True)
        ids.append(created.id)
        await approvals.decide(ANN, approvals.key_hash(created.id), True, created.match_number)

    run(make_settings(redis_url), body)
    dump = redis_server.dump()
    assert ids[0] not in dump and ids[0].split(".")[1] not in dump
    assert SHOP.key.reveal() not in dump


def test_the_seed_in_redis_gives_the_id_only_with_the_secret(
    redis_url: str, redis_server: RedisServer
) -> None:
    """What an approval.* event can carry: the record's seed, which the deliverer (holding
    AUTH_SECRET) turns into the id its client knows."""
    settings = make_settings(redis_url)

    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        key = keys.approval(ANN["id"], approvals.key_hash(created.id))
        seed = await store.redis.hget(key, "i")
        assert seed is not None and seed not in created.id
        assert approval_id(settings, ANN["id"], str(seed)) == created.id
        other = make_settings(redis_url, AUTH_SECRET="q" * 40)
        assert approval_id(other, ANN["id"], str(seed)) != created.id

    run(settings, body)


def test_every_operation_runs_on_a_real_cluster(cluster_env: dict[str, str]) -> None:
    """Each script's keys share the user's hash slot, and the queue works on a Cluster
    node, which refuses a cross-slot script."""
    settings = make_settings(cluster_env["REDIS_URL"], REDIS_CLUSTER="1")

    async def body(store: Store, approvals: Approvals) -> None:
        queue = ApprovalQueue(store.redis, "bot-1")
        await queue.ensure_group()
        with pytest.raises(UnknownUser):
            await approvals.create(SHOP, 4242, "Pay", None, False)
        created = await approvals.create(SHOP, ANN["id"], "Pay", "s", True)
        (entry,) = await queue.read(10, 100)
        key_hash = approvals.key_hash(created.id)
        assert entry[1:] == (ANN["id"], key_hash)
        prompt = await approvals.prompt(ANN["id"], key_hash)
        assert prompt is not None and prompt.match == created.match_number
        await approvals.sent(ANN["id"], key_hash, 7)
        await queue.done(entry[0])
        decided = await approvals.decide(ANN, key_hash, True, created.match_number)
        assert decided is not None and decided.status == "approved"
        result = await approvals.status(created.id, SHOP)
        assert result is not None and result.status == "approved"
        other = await approvals.create(SHOP, BOB["id"], "Pay", None, False)
        assert await approvals.undeliverable(BOB["id"], approvals.key_hash(other.id))

    run(settings, body)


def test_the_sweep_marks_expired_once_and_forgets_settled(redis_url: str) -> None:
    async def body(store: Store, approvals: Approvals) -> None:
        decided = await approvals.create(SHOP, ANN["id"], "decided", None, False)
        await approvals.decide(ANN, approvals.key_hash(decided.id), approve=True)
        sent = await approvals.create(BLOG, BOB["id"], "Pay", "s-2", False)
        await approvals.sent(BOB["id"], approvals.key_hash(sent.id), 42)
        assert await approvals.expire_due() == []  # nothing due yet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not (expired := await approvals.expire_due()):
            assert loop.time() < deadline, "nothing expired after the lifetime"
            await asyncio.sleep(0.2)
        (only,) = expired
        assert (only.user_id, only.key_hash, only.message_id) == (
            BOB["id"], approvals.key_hash(sent.id), 42,
        )
        assert (only.client_name, only.text, only.state, only.language_code) == (
            "blog.example", "Pay", "s-2", "en",
        )
        assert await approvals.expire_due() == []  # once
        assert await store.redis.zcard(keys.APPROVAL_DUE) == 0  # settled ones forgotten
        result = await approvals.status(sent.id, BLOG)
        assert result is not None and result.status == "expired"

    run(make_settings(redis_url, APPROVAL_TTL_SECONDS="2"), body)
