"""Event webhooks end to end: real API processes deliver to a real HTTP receiver that
verifies every signature with the `standardwebhooks` library; retries with the same
webhook-id, a timeout, an answer trickled past the attempt's deadline, a huge answer,
a process killed mid-delivery, exhaustion to the dead letters, per-(user, client) order
behind a failing head (another client's events going on), emptied streams deleted, Redis
going away, secrets kept out of logs and Redis."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared import keys
from shared.events import Events
from shared.store import Store
from tests.fixtures.api import ANN, ApiProcess, ApiStarter, api_settings
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.redis import RedisServer, kill
from tests.fixtures.store import run_on_store
from tests.fixtures.webhooks import HOLD, HUGE, TRICKLE, Receiver, new_secret, receivers

SHOP_KEY = "shop-key-" + "s" * 24
KEYS = f"shop:{SHOP_KEY},blog:{'blog-key-' + 'b' * 24}"
# fast retries for tests: the waits after failed attempts, a short claim idle
FAST = {
    "API_KEYS": KEYS, "EVENT_RETRY_SCHEDULE": "1.5,1.5,1.5", "EVENT_CLAIM_IDLE_SECONDS": "1",
    "EVENT_TIMEOUT_SECONDS": "2",
}


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    yield from receivers()


def hooks(*entries: tuple[Receiver, str], **extra: Any) -> str:
    return json.dumps([{"client": "shop", "url": r.url, "secret": s, **extra}
                       for r, s in entries])


def emit(redis_url: str, type_: str, user: int = 1001, client: str = "shop",
         cluster: bool = False, **data: Any) -> None:
    async def body(store: Store) -> None:
        await Events(store.redis).emit(user, type_, client, {"user": {**ANN, "id": user}, **data})

    env = {"REDIS_CLUSTER": "1"} if cluster else {}
    run_on_store(api_settings(redis_url, **env), body)


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def start(start_api: ApiStarter, hook_json: str, **env: str) -> ApiProcess:
    return start_api(**{**FAST, "EVENT_WEBHOOKS": hook_json, **env})


def test_events_arrive_signed_with_the_body_of_the_spec(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret])
    start(start_api, hooks((hook, secret)))
    emit(redis_url, "login.approved", id="req-1")
    emit(redis_url, "session.ended", id="req-1")
    got = hook.wait("two deliveries", lambda: len(hook.accepted()) >= 2 and hook.accepted())
    assert all(d.verified_by == [secret] for d in got)
    first = got[0].payload
    assert set(first) == {"type", "timestamp", "data"}
    assert first["type"] == "login.approved" and first["data"] == {"user": ANN, "id": "req-1"}
    assert [d.payload["type"] for d in got] == ["login.approved", "session.ended"]
    assert got[0].id.startswith("evt_1001_") and got[0].id != got[1].id
    # delivered: gone from the user's stream, whose key goes once empty (within a few
    # seconds: not while its newest id is from the last second), every wake
    # acknowledged (the second's events were already out when it was read: acked all
    # the same)
    with sync_client(redis_url) as client:
        wait_until(lambda: client.xlen(keys.events(1001)) == 0, what="the stream to empty")
        wait_until(lambda: client.exists(keys.events(1001), keys.event_retry(1001),
                                         keys.event_logins(1001)) == 0,
                   timeout=15, what="the emptied stream's key to go")
        wait_until(
            lambda: client.xpending(keys.EVENT_WAKE, keys.EVENT_GROUP)["pending"] == 0
            and client.xlen(keys.EVENT_WAKE) == 0, what="the wakes to be acknowledged",
        )


def test_two_secrets_during_a_rotation_sign_both(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    old, new = new_secret(), new_secret()
    hook = receiver([old, new])
    start(start_api, hooks((hook, old), (hook, new)))
    emit(redis_url, "code.redeemed")
    (got,) = hook.wait("a delivery", hook.accepted)
    assert got.verified_by == [old, new] and len(got.signature.split(" ")) == 2
    # a receiver that knows only one of them accepts it too
    assert all(part.startswith("v1,") for part in got.signature.split(" "))


def test_an_endpoint_gets_only_the_types_it_lists(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    every, some = receiver([secret]), receiver([secret])
    both = json.dumps([
        {"client": "shop", "url": every.url, "secret": secret},
        {"client": "shop", "url": some.url, "secret": secret, "events": ["session.ended"]},
        {"client": "blog", "url": some.url, "secret": secret},
    ])
    start(start_api, both)
    emit(redis_url, "login.approved")
    emit(redis_url, "session.ended")
    emit(redis_url, "token.revoked")
    every.wait("three deliveries", lambda: len(every.accepted()) >= 3)
    (ended,) = some.wait("one delivery", some.accepted)
    assert ended.payload["type"] == "session.ended"
    assert ended.id == every.accepted()[1].id  # one event, one id, at every endpoint


def test_a_5xx_is_retried_with_the_same_webhook_id(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret], plan=[503])
    start(start_api, hooks((hook, secret)))
    emit(redis_url, "approval.approved", id="ap-1")
    hook.wait("the retry", hook.accepted)
    first, second = hook.received
    assert first.status == 503 and second.status == 204
    assert first.id == second.id and first.body == second.body and second.verified_by
    assert second.at - first.at >= 1.0  # after the backoff (1.5 s), not at once


def test_a_timeout_is_retried(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret], plan=[HOLD])
    start(start_api, hooks((hook, secret)), EVENT_TIMEOUT_SECONDS="1")
    emit(redis_url, "token.revoked")
    hook.wait("the retry after a timeout", hook.accepted)
    assert hook.received[0].id == hook.received[1].id


def test_an_answer_trickled_past_the_deadline_fails_the_attempt(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    """A 200 whose body comes a byte every 0.5 s: each read is quick, the whole is not;
    the attempt ends at EVENT_TIMEOUT_SECONDS (2) and is retried with the same id (the
    receiver trickles for 60 s: without the deadline the retry would come far later)."""
    secret = new_secret()
    hook = receiver([secret], plan=[TRICKLE])
    api = start(start_api, hooks((hook, secret)), EVENT_TIMEOUT_SECONDS="2")
    emit(redis_url, "login.approved", id="req-t")
    (got,) = hook.wait("the retry after a trickled answer", hook.accepted, timeout=30)
    first = hook.received[0]
    assert first.status == TRICKLE and got is hook.received[1]
    assert got.id == first.id and got.body == first.body and got.verified_by == [secret]
    with sync_client(redis_url) as client:
        wait_until(lambda: client.xlen(keys.events(1001)) == 0, what="the stream to empty")
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "tglogin_webhook_attempts_failed_total 1.0" in metrics


def test_a_huge_answer_is_delivered_without_reading_it(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    """A 200 with a 64 MiB body counts as delivered (its status is what counts; the body
    is not read past a few KiB), once; the process goes on delivering."""
    secret = new_secret()
    hook = receiver([secret], plan=[HUGE])
    api = start(start_api, hooks((hook, secret)))
    emit(redis_url, "login.approved", id="req-h")
    (got,) = hook.wait("the delivery answered with a huge body", hook.accepted)
    assert got.status == 200 and got.verified_by == [secret]
    with sync_client(redis_url) as client:
        wait_until(lambda: client.xlen(keys.events(1001)) == 0, what="the stream to empty")
    emit(redis_url, "session.ended", id="req-h")
    hook.wait("the next delivery", lambda: len(hook.accepted()) >= 2)
    assert len(hook.received) == 2 and hook.received[1].id != got.id
    assert api.running() and httpx.get(f"{api.url}/readyz").status_code == 200


def test_a_process_killed_mid_delivery_loses_nothing(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret], plan=[HOLD])
    first = start(start_api, hooks((hook, secret)), EVENT_TIMEOUT_SECONDS="8")
    emit(redis_url, "login.approved", id="req-9")
    hook.wait("the held request", lambda: hook.held == 1)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    # another process claims the pending wake (idle 1 s) once the lock lapses (13 s
    # for an 8 s attempt timeout: a lock never lapses during a live attempt)
    start(start_api, hooks((hook, secret)), EVENT_TIMEOUT_SECONDS="2")
    (got,) = hook.wait("the delivery by another process", hook.accepted, timeout=60)
    assert got.id == hook.received[0].id and got.verified_by == [secret]


def test_exhausted_events_go_to_the_dead_letters_and_metrics(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret], plan=[500] * 10)
    api = start(start_api, hooks((hook, secret)), EVENT_RETRY_SCHEDULE="0.2,0.2")
    emit(redis_url, "approval.expired", id="ap-7")
    with sync_client(redis_url) as client:
        dead = wait_until(lambda: client.xrange(keys.EVENT_DEAD), timeout=20,
                          what="a dead letter")
        (_, fields), = dead
        assert fields["t"] == "approval.expired" and fields["id"] == hook.received[0].id
        assert fields["n"] == "3" and client.xlen(keys.events(1001)) == 0
    assert len(hook.received) == 3 and {d.id for d in hook.received} == {fields["id"]}
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "tglogin_events_dead_lettered_total 1.0" in metrics
    assert "tglogin_webhook_attempts_failed_total 3.0" in metrics


def test_retries_stop_at_event_retry_seconds(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    """A schedule longer than the window: the attempt that would fall after
    EVENT_RETRY_SECONDS from the first is not made; the event goes to the dead letters."""
    secret = new_secret()
    hook = receiver([secret], plan=[500] * 20)
    start(start_api, hooks((hook, secret)), EVENT_RETRY_SCHEDULE=",".join(["1"] * 20),
          EVENT_RETRY_SECONDS="2")
    emit(redis_url, "token.revoked")
    with sync_client(redis_url) as client:
        wait_until(lambda: client.xlen(keys.EVENT_DEAD), timeout=20, what="a dead letter")
        (_, fields), = client.xrange(keys.EVENT_DEAD)
    assert 2 <= int(fields["n"]) <= 3 and len(hook.received) == int(fields["n"])


def test_a_failing_head_holds_back_that_users_later_events(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    secret = new_secret()
    hook = receiver([secret], failing={"login.approved": 2})
    start(start_api, hooks((hook, secret)))
    emit(redis_url, "login.approved", id="req-1")
    emit(redis_url, "session.ended", id="req-1")
    emit(redis_url, "code.redeemed", user=2002)  # another user is not held back
    hook.wait("all three", lambda: len(hook.accepted()) >= 3)
    types = [(d.payload["type"], d.status) for d in hook.received]
    ann = [t for t in types if t[0] != "code.redeemed"]
    assert ann == [("login.approved", 500), ("login.approved", 500),
                   ("login.approved", 204), ("session.ended", 204)]
    assert types.index(("code.redeemed", 204)) < types.index(("login.approved", 204))


def test_one_clients_failing_endpoint_holds_back_only_its_own_events(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    """shop's endpoint fails (its retry a minute away); the same user's event for blog,
    appended after shop's, arrives at once; shop's later event still waits behind
    shop's head; both of shop's stay in the user's stream until shop has them."""
    secret = new_secret()
    shop, blog = receiver([secret], plan=[500] * 10), receiver([secret])
    both = json.dumps([
        {"client": "shop", "url": shop.url, "secret": secret},
        {"client": "blog", "url": blog.url, "secret": secret},
    ])
    start(start_api, both, EVENT_RETRY_SCHEDULE="60,60")
    emit(redis_url, "login.approved", id="req-1")
    shop.wait("shop's first attempt", lambda: shop.received)
    emit(redis_url, "code.redeemed", client="blog", session="b1")
    emit(redis_url, "session.ended", id="req-1")
    (got,) = blog.wait("blog's event, not held behind shop's", blog.accepted, timeout=15)
    assert got.payload["type"] == "code.redeemed" and got.verified_by == [secret]
    with sync_client(redis_url) as client:
        wait_until(lambda: [f["c"] for _, f in client.xrange(keys.events(1001))]
                   == ["shop", "shop"], what="blog's event out of the stream, shop's kept")
        assert [f["t"] for _, f in client.xrange(keys.events(1001))] == [
            "login.approved", "session.ended"]
    assert [d.payload["type"] for d in shop.received] == ["login.approved"]


def test_redis_down_answers_503_and_delivery_recovers(
    tmp_path: Path, start_api: ApiStarter, receiver: Callable[..., Receiver]
) -> None:
    own = RedisServer(port=free_port(), data_dir=tmp_path / "own")
    own.start()
    try:
        secret = new_secret()
        hook = receiver([secret])
        api = start(start_api, hooks((hook, secret)), REDIS_URL=own.url, REDIS_TIMEOUT="1")
        emit(own.url, "login.approved")
        hook.wait("the first delivery", hook.accepted)
        kill(own)
        answer = httpx.get(f"{api.url}/v1/events", headers={"X-API-Key": SHOP_KEY}, timeout=10)
        assert answer.status_code == 503 and answer.json()["error"] == "unavailable"
        own.start()
        wait_until(lambda: httpx.get(f"{api.url}/readyz").status_code == 200, timeout=20,
                   what="the API to see Redis again")
        emit(own.url, "session.ended")
        hook.wait("a delivery after the outage", lambda: len(hook.accepted()) >= 2)
        assert api.running()
    finally:
        kill(own)


def test_secrets_reach_neither_logs_nor_redis(
    start_api: ApiStarter, redis_url: str, receiver: Callable[..., Receiver],
    redis_server: RedisServer,
) -> None:
    old, new = new_secret(), new_secret()
    hook = receiver([old, new], plan=[500])
    api = start(start_api, hooks((hook, old), (hook, new)), LOG_LEVEL="DEBUG")
    emit(redis_url, "user.logged_out")
    hook.wait("the retried delivery", hook.accepted)
    with sync_client(redis_url) as client:
        stored = [redis_server.dump()]
        for key in client.scan_iter(count=1000):
            if client.type(key) == "stream":
                stored.append(json.dumps(client.xrange(key)))
    text = "\n".join(stored) + api.output()
    for secret in (old, new):
        assert secret[6:] not in text and secret[6:20] not in text


def test_delivery_runs_on_a_cluster(
    start_api: ApiStarter, cluster_env: dict[str, str], receiver: Callable[..., Receiver]
) -> None:
    """The deliverer's streams, group, locks and retries on a Cluster: the user's keys in
    the user's slot, the wake stream, due set and pull streams wherever theirs are."""
    secret = new_secret()
    hook = receiver([secret], failing={"login.approved": 1})
    api = start(start_api, hooks((hook, secret)), **cluster_env)
    url = cluster_env["REDIS_URL"]
    emit(url, "login.approved", cluster=True, id="req-1")
    emit(url, "session.ended", cluster=True, id="req-1")
    emit(url, "user.logged_out", user=2002, cluster=True)
    hook.wait("three deliveries", lambda: len(hook.accepted()) >= 3)
    ann = [d.payload["type"] for d in hook.accepted() if d.payload["data"]["user"]["id"] == 1001]
    assert ann == ["login.approved", "session.ended"]
    assert all(d.verified_by == [secret] for d in hook.received)
    pulled = httpx.get(f"{api.url}/v1/events", headers={"X-API-Key": SHOP_KEY}).json()
    assert len(pulled["events"]) == 3
