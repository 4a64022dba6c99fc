"""shared.approvals against a real Redis server: create for known users, decide once, expire,
limits, the queue the bot fleet reads, and what Redis holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import pytest

from shared import approval_decisions, approval_due, keys
from shared.approval_due import PENDING_KEEP_MS
from shared.approvals import (
    ApprovalQueue,
    Approvals,
    Prompt,
    UnknownUser,
    approval_id,
    parse_id,
)
from shared.logins import MATCH_HIGH, MATCH_LOW, decisions
from shared.redis import Unavailable, scripts
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


async def prompt_of(approvals: Approvals, user_id: int, key_hash: str) -> Prompt | None:
    """What a bot taking the approval for a queue entry would send (None: nothing)."""
    return (await approvals.take(user_id, key_hash, "1-1")).prompt


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
        prompt = await prompt_of(approvals, ANN["id"], key_hash)
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
        assert await prompt_of(approvals, ANN["id"], key_hash) is None  # nothing to send now
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
        prompt = await prompt_of(approvals, ANN["id"], approvals.key_hash(right.id))
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
        assert await prompt_of(approvals, ANN["id"], key_hash) is None
        record = keys.approval(ANN["id"], key_hash)
        assert await store.redis.pttl(record) > 2000  # kept for the sweep to mark it
        await _until(approvals.expire_due, "the sweep to mark it expired")
        ttl = await store.redis.pttl(record)
        assert 0 < ttl <= 2000  # readable APPROVAL_TTL_SECONDS from then, then gone

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
        prompt = await prompt_of(approvals, ANN["id"], key_hash)
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


@pytest.fixture(params=["single", "cluster"])
def deployment(request: pytest.FixtureRequest) -> dict[str, str]:
    """A single server, or a real Cluster (the due set, the user's slot and the queue on
    different nodes): REDIS_URL and REDIS_CLUSTER."""
    if request.param == "single":
        return {"REDIS_URL": request.getfixturevalue("redis_url")}
    cluster: dict[str, str] = request.getfixturevalue("cluster_env")
    return {"REDIS_URL": cluster["REDIS_URL"], "REDIS_CLUSTER": "1"}


async def _until(check: Callable[[], Awaitable[object]], what: str, within: float = 15) -> object:
    """What `check` gives once it is truthy; fails after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := await check()):
        assert loop.time() < deadline, f"no {what} within {within:g} s"
        await asyncio.sleep(0.2)
    return found


def test_an_approval_whose_queue_step_was_lost_is_queued_at_its_check(
    deployment: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API process killed (or a Redis stalled) after the create script and before the
    queue entry: the sweep queues the approval at its check time, then it expires with
    approval.expired like any other."""
    monkeypatch.setattr(approval_due, "CHECK_MIN_MS", 1000)

    async def body(store: Store, approvals: Approvals) -> None:
        queue = ApprovalQueue(store.redis, "bot-1")
        await store.redis.set(keys.APPROVAL_QUEUE, "not a stream")  # the queue step fails
        with pytest.raises(Unavailable):
            await approvals.create(SHOP, ANN["id"], "Pay", "s-1", False)
        await store.redis.delete(keys.APPROVAL_QUEUE)
        await queue.ensure_group()
        (member,) = await store.redis.zrange(keys.APPROVAL_DUE, 0, -1)
        key_hash = str(member).partition(":")[2]
        assert await queue.read(10, 100) == []  # never queued

        async def queued() -> list[tuple[str, int, str]]:
            await approvals.expire_due()
            return await queue.read(10, 100)

        entries = await _until(queued, "queue entry from the sweep")
        assert [(u, h) for _, u, h in entries] == [(ANN["id"], key_hash)]
        expiry = await store.redis.hget(keys.approval(ANN["id"], key_hash), "e")
        assert await store.redis.zscore(keys.APPROVAL_DUE, member) == int(str(expiry))
        (expired,) = await _until(approvals.expire_due, "expiry")
        assert (expired.key_hash, expired.state) == (key_hash, "s-1")
        events = await store.redis.xrange(keys.events(ANN["id"]))
        assert [fields["t"] for _, fields in events] == ["approval.expired"]
        assert await store.redis.zcard(keys.APPROVAL_DUE) == 0

    # checked 3 s after admission (twice REDIS_TIMEOUT and a second), expired at 6 s
    run(make_settings(deployment["REDIS_URL"], **deployment, APPROVAL_TTL_SECONDS="6",
                      REDIS_TIMEOUT="1"), body)


def test_a_creation_that_never_ran_is_forgotten_and_refused_if_it_comes_late(
    deployment: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The due entry is written first; a create script that never ran (refused, or its
    process died) leaves a member the sweep drops at its check time, with a tombstone
    that refuses the same creation should it still arrive (a node stalled with it)."""
    monkeypatch.setattr(approval_due, "CHECK_MIN_MS", 1000)

    async def body(store: Store, approvals: Approvals) -> None:
        with pytest.raises(UnknownUser):
            await approvals.create(SHOP, 4242, "Pay", None, False)
        count = keys.approval_user_count(ANN["id"])
        await store.redis.hset(count, "x", "1")  # the create script fails: it never ran
        with pytest.raises(Unavailable):
            await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        members = await store.redis.zrange(keys.APPROVAL_DUE, 0, -1)
        assert len(members) == 2
        key_hash = next(str(m) for m in members if str(m).startswith(f"{ANN['id']}:"))[-32:]

        async def forgotten() -> bool:
            await approvals.expire_due()
            return await store.redis.zcard(keys.APPROVAL_DUE) == 0

        await _until(forgotten, "due members dropped")
        record = keys.approval(ANN["id"], key_hash)
        assert await store.redis.hgetall(record) == {"x": "1"}  # a tombstone
        await store.redis.delete(count)
        late = await scripts(store.redis).get("approval_create.lua")(
            keys=[keys.user(ANN["id"]), record, count, f"{count}:late"],
            args=["c", "shop.example", "Pay", "", 0, "", 60_000, 5, 600, ANN["id"], "seed", 30],
        )
        assert int(late[0]) == 3  # too late: nothing made, no budget spent
        assert await store.redis.hgetall(record) == {"x": "1"}
        assert await store.redis.exists(count) == 0

    run(make_settings(deployment["REDIS_URL"], **deployment, REDIS_TIMEOUT="1"), body)


def test_two_entries_for_one_approval_send_it_once_unless_a_sender_died(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep may queue an approval a second time: the entry that takes it first
    sends; the other waits while that send's note is fresh. A sender killed after
    Telegram took the message (its note goes stale, no message id) leaves it to be sent
    again, said so; the message id noted last is what a decision reports for editing."""
    monkeypatch.setattr(approval_decisions, "SEND_LEASE_MS", 1000)

    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", None, False)
        key_hash = approvals.key_hash(created.id)
        first = await approvals.take(ANN["id"], key_hash, "1-1")
        assert first.outcome == "send" and not first.again and first.prompt is not None
        assert (await approvals.take(ANN["id"], key_hash, "2-1")).outcome == "busy"
        assert (await approvals.take(ANN["id"], key_hash, "1-1")).outcome == "send"  # renewed

        async def taken_over() -> object:
            taken = await approvals.take(ANN["id"], key_hash, "2-1")
            return taken if taken.outcome == "send" else None

        again = await _until(taken_over, "take-over after the lease")
        assert again.again
        await approvals.sent(ANN["id"], key_hash, 43)
        for entry in ("1-1", "2-1", "3-1"):
            assert (await approvals.take(ANN["id"], key_hash, entry)).outcome == "nothing"
        decision = await approvals.decide(ANN, key_hash, approve=True)
        assert decision is not None and decision.message_id == 43
        assert (await approvals.take(ANN["id"], key_hash, "2-1")).outcome == "nothing"

    run(make_settings(redis_url), body)


async def _redis_ms(store: Store) -> int:
    seconds, micros = await store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_late_sweep_still_marks_expired_with_its_event(redis_url: str) -> None:
    """No sweep reaches an approval until long after its expiry (the bot fleet was
    down): its record is still there, the poll reads it expired all along, and the late
    sweep marks it with approval.expired; only then does its lifetime shorten."""
    async def body(store: Store, approvals: Approvals) -> None:
        created = await approvals.create(SHOP, ANN["id"], "Pay", "s-9", False)
        key_hash = approvals.key_hash(created.id)
        await approvals.sent(ANN["id"], key_hash, 42)
        record = keys.approval(ANN["id"], key_hash)
        expiry = int(str(await store.redis.hget(record, "e")))

        async def long_past() -> bool:  # past where a record used to end (2 x the TTL)
            result = await approvals.status(created.id, SHOP)
            now = await _redis_ms(store)
            assert result is not None, "the poll of an unswept approval turned 404"
            assert result.status == ("pending" if now < expiry else "expired")
            return now > expiry + 2000 + 500

        await _until(long_past, "time past twice the lifetime")
        assert await store.redis.pttl(record) > PENDING_KEEP_MS - 10_000  # kept past it
        (expired,) = await approvals.expire_due()
        assert (expired.key_hash, expired.message_id, expired.state) == (key_hash, 42, "s-9")
        events = await store.redis.xrange(keys.events(ANN["id"]))
        assert [fields["t"] for _, fields in events] == ["approval.expired"]
        result = await approvals.status(created.id, SHOP)
        assert result is not None and result.status == "expired"
        assert 0 < await store.redis.pttl(record) <= 2000
        assert await store.redis.zcard(keys.APPROVAL_DUE) == 0

    run(make_settings(redis_url, APPROVAL_TTL_SECONDS="2"), body)


def _many(redis_url: str, **env: str) -> Settings:
    """Settings under which one client may push hundreds of approvals to a user."""
    return make_settings(redis_url, APPROVAL_TTL_SECONDS="2", APPROVAL_USER_LIMIT="1000",
                         APPROVAL_USER_TOTAL_LIMIT="1000", APPROVAL_CLIENT_LIMIT="1000",
                         **env)


async def _all_due(store: Store, approvals: Approvals, created: list[str]) -> None:
    """Wait until every approval in `created` is past its expiry."""
    last = keys.approval(parse_id(created[-1]) or 0, approvals.key_hash(created[-1]))
    expiry = int(str(await store.redis.hget(last, "e")))

    async def due() -> bool:
        return await _redis_ms(store) >= expiry

    await _until(due, "the approvals to be due")


def test_two_sweepers_share_the_due_approvals(deployment: dict[str, str]) -> None:
    """300 approvals due at once and two bot processes sweeping side by side: each claims
    its own members (no approval is looked at twice), batch after batch while they come
    back full, so one round of each expires all 300, each with its event. (How they
    split the 300 depends on the scheduling: one may take them all.)"""
    settings = _many(deployment["REDIS_URL"], **deployment)

    async def body(store: Store, approvals: Approvals) -> None:
        created = [
            (await approvals.create(SHOP, user["id"], f"Pay {n}", None, False)).id
            for n in range(150) for user in (ANN, BOB)
        ]
        await _all_due(store, approvals, created)
        other = Store.from_settings(settings)  # the second bot process's Redis client
        try:
            second = Approvals(other.redis, settings)
            mine, theirs = await asyncio.gather(approvals.expire_due(), second.expire_due())
        finally:
            await other.close()
        ours = {e.key_hash for e in mine}
        others = {e.key_hash for e in theirs}
        assert len(ours) == len(mine) and len(others) == len(theirs)
        assert not ours & others  # disjoint shares
        assert ours | others == {approvals.key_hash(i) for i in created}
        for user in (ANN, BOB):
            events = await store.redis.xrange(keys.events(user["id"]))
            assert [fields["t"] for _, fields in events] == ["approval.expired"] * 150
        assert await store.redis.zcard(keys.APPROVAL_DUE) == 0
        for approval in created[:3] + created[-3:]:
            result = await approvals.status(approval, SHOP)
            assert result is not None and result.status == "expired"

    run(settings, body)


def test_a_sweeper_killed_after_claiming_leaves_its_members_for_after_the_lease(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bot process that claimed due members and died before settling them: the other
    sweepers leave them alone while the claim's lease lasts, then take them and expire
    them with their events."""
    monkeypatch.setattr(approval_due, "LEASE_MIN_MS", 1000)
    settings = _many(redis_url, REDIS_TIMEOUT="1")
    lease = approval_due.lease_ms(settings)
    assert lease == 4000

    async def body(store: Store, approvals: Approvals) -> None:
        created = [(await approvals.create(SHOP, ANN["id"], f"Pay {n}", None, False)).id
                   for n in range(12)]
        await _all_due(store, approvals, created)
        claimed = await approvals.claim_due(5)  # and the process is killed
        claimed_at = await _redis_ms(store)
        assert len(claimed) == 5
        held = {member.partition(":")[2] for member, _ in claimed}
        first = await approvals.expire_due()  # another bot process's round
        assert len(first) == 7 and not held & {e.key_hash for e in first}
        assert await approvals.expire_due() == []  # still claimed
        late = await _until(approvals.expire_due, "the claimed members after the lease")
        assert await _redis_ms(store) >= claimed_at + lease - 50
        assert {e.key_hash for e in late} == held
        events = await store.redis.xrange(keys.events(ANN["id"]))
        assert [fields["t"] for _, fields in events] == ["approval.expired"] * 12
        assert await store.redis.zcard(keys.APPROVAL_DUE) == 0

    run(settings, body)
