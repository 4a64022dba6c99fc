"""POST /v1/login-requests and GET /v1/login-requests/{id}: in-process app, real Redis.

The bot's side (approve, deny) is `shared.logins` called exactly as the bot calls it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api_worker.app import create_app
from api_worker.waiters import Waiters
from shared.settings import Settings
from tests.fixtures.api import ANN, TestClient, api_settings
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_logins, run_on_store

BOT = "tglogin_test_bot"
KEYS = "shop.example:shop-key-0123456789abcdefgh,blog.example:blog-key-0123456789abcdefgh"
SHOP = {"X-API-Key": "shop-key-0123456789abcdefgh"}
BLOG = {"X-API-Key": "blog-key-0123456789abcdefgh"}
PATH = "/v1/login-requests"


def settings_for(redis_url: str, **env: str) -> Settings:
    return api_settings(redis_url, **{"TELEGRAM_BOT_USERNAME": BOT, **env})


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(redis_url))) as client:
        yield client


def decide(settings: Settings, payload: str, approve: bool = True, user: Any = ANN) -> None:
    """What the bot does when a user taps Approve or Deny."""
    run_on_logins(settings, lambda logins: logins.decide(payload, user, approve))


def payload_of(created: dict[str, Any]) -> str:
    link = rf"https://t\.me/{BOT}\?start=([A-Za-z0-9_-]{{22,64}})"
    match = re.fullmatch(link, created["deep_link"])
    assert match, created
    return match.group(1)


def waiters(client: TestClient) -> Waiters:
    found: Waiters = client.app.state.waiters  # type: ignore[attr-defined]
    return found


# A held poll reads the request once more when its own deadline runs out, so at that deadline
# it would find a decision (or Redis gone) anyway: only an answer well before the deadline
# shows that the decision (or the loss) woke it. HOLD is the longest `wait` there is.
HOLD = 30
WOKEN_WITHIN = 20.0


def held_poll(
    pool: ThreadPoolExecutor, client: TestClient, created: dict[str, Any]
) -> Future[tuple[httpx.Response, float]]:
    """`GET ?wait=HOLD` in `pool`, returned once the app holds it: its answer and how long
    the request took."""

    def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = client.get(f"{PATH}/{created['id']}?wait={HOLD}")
        return response, time.monotonic() - started

    assert waiters(client).waiting() == 0
    poll = pool.submit(timed)
    wait_until(lambda: waiters(client).waiting() == 1, what="the poll to be held")
    assert not poll.done()
    return poll


def woken(poll: Future[tuple[httpx.Response, float]]) -> httpx.Response:
    """The held poll's answer, which must come well before its own deadline."""
    response, took = poll.result(timeout=HOLD + 15)  # past the deadline: the answer comes
    assert took < WOKEN_WITHIN, (
        f"answered {took:.1f} s after it began: by its own {HOLD} s deadline, not woken"
    )
    return response


# -- create ----------------------------------------------------------------------------------


def test_create_gives_id_link_command_and_lifetime(client: TestClient) -> None:
    response = client.post(PATH, json={})
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"id", "deep_link", "start_command", "expires_in"}
    payload = payload_of(body)
    assert body["start_command"] == f"/start {payload}"
    assert body["expires_in"] == 300
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", body["id"])
    assert body["id"] != payload
    # no body at all is the same as {}
    assert client.post(PATH).status_code == 201


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b'"state"',
        b"{not json",
        b'{"state": 5}',
        b'{"state": ["a"]}',
        b'{"state": "' + b"x" * 129 + b'"}',
        b'{"stat": "typo"}',
    ],
)
def test_create_refuses_a_bad_body(client: TestClient, content: bytes) -> None:
    response = client.post(PATH, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_create_refuses_a_large_body(client: TestClient) -> None:
    response = client.post(PATH, json={"state": "x" * 5000})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_create_without_a_bot_username_is_503_saying_so(redis_url: str) -> None:
    settings = settings_for(redis_url, TELEGRAM_BOT_USERNAME="")
    with TestClient(create_app(settings)) as client:
        response = client.post(PATH, json={})
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert "bot" in response.json()["message"] and "username" in response.json()["message"]

        run_on_store(settings, lambda store: store.publish_bot_username("published_bot"))
        response = client.post(PATH, json={})
        assert response.status_code == 201
        assert response.json()["deep_link"].startswith("https://t.me/published_bot?start=")


def test_create_is_limited_per_address(redis_url: str) -> None:
    settings = settings_for(redis_url, LOGIN_REQUEST_LIMIT="2", LOGIN_REQUEST_WINDOW_SECONDS="30")
    with TestClient(create_app(settings)) as client:
        assert [client.post(PATH).status_code for _ in range(2)] == [201, 201]
        refused = client.post(PATH)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 30


# -- poll ------------------------------------------------------------------------------------


def test_approval_is_delivered_once_then_the_request_is_gone(
    redis_url: str, client: TestClient
) -> None:
    created = client.post(PATH, json={"state": "csrf-123"}).json()
    url = f"{PATH}/{created['id']}"
    pending = client.get(url)
    assert pending.status_code == 200
    assert pending.headers["cache-control"] == "no-store"
    assert pending.json()["status"] == "pending"
    assert 1 <= pending.json()["expires_in"] <= 300

    decide(settings_for(redis_url), payload_of(created))
    approved = client.get(url)
    assert approved.status_code == 200
    body = approved.json()
    assert set(body) == {"status", "user", "access_token", "token_type", "expires_in", "state"}
    assert body["status"] == "approved" and body["token_type"] == "Bearer"
    assert body["user"] == ANN and body["state"] == "csrf-123"
    assert body["expires_in"] == 2592000
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/v1/me", headers=bearer).json() == {"user": ANN}

    gone = client.get(url)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert client.post("/v1/tokens/revoke", headers=bearer).status_code == 204
    assert client.get("/v1/me", headers=bearer).status_code == 401


def test_without_state_the_approval_says_null(redis_url: str, client: TestClient) -> None:
    created = client.post(PATH).json()
    decide(settings_for(redis_url), payload_of(created))
    assert client.get(f"{PATH}/{created['id']}").json()["state"] is None


def test_the_payload_never_reads_the_result(redis_url: str, client: TestClient) -> None:
    created = client.post(PATH).json()
    payload = payload_of(created)
    assert client.get(f"{PATH}/{payload}").status_code == 404
    decide(settings_for(redis_url), payload)
    assert client.get(f"{PATH}/{payload}?wait=0").status_code == 404
    assert client.get(f"{PATH}/{created['id']}").json()["status"] == "approved"
    assert client.get(f"{PATH}/{payload}").status_code == 404


def test_denied_says_denied(redis_url: str, client: TestClient) -> None:
    created = client.post(PATH).json()
    decide(settings_for(redis_url), payload_of(created), approve=False)
    for _ in range(2):
        response = client.get(f"{PATH}/{created['id']}?wait=30")  # decided: no waiting
        assert response.json() == {"status": "denied"}


@pytest.mark.parametrize("login_id", ["unknown", "A" * 22, "x" * 300, "a%20b"])
def test_unknown_id_is_404(client: TestClient, login_id: str) -> None:
    response = client.get(f"{PATH}/{login_id}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("wait", ["-1", "31", "abc", "1.5", "", "1e1", "\uff19"])
def test_wait_out_of_range_is_400(client: TestClient, wait: str) -> None:
    created = client.post(PATH).json()
    response = client.get(f"{PATH}/{created['id']}", params={"wait": wait})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_api_keys_separate_clients(redis_url: str) -> None:
    with TestClient(create_app(settings_for(redis_url, API_KEYS=KEYS))) as client:
        assert client.post(PATH).status_code == 401
        assert client.post(PATH, headers={"X-API-Key": "nope"}).status_code == 401
        created = client.post(PATH, headers=SHOP).json()
        url = f"{PATH}/{created['id']}"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=BLOG).status_code == 404  # another client's
        assert client.get(url, headers=SHOP).json()["status"] == "pending"
        decide(settings_for(redis_url, API_KEYS=KEYS), payload_of(created))
        assert client.get(url, headers=BLOG).status_code == 404
        assert client.get(url, headers=SHOP).json()["status"] == "approved"


def test_metrics_count_login_requests(redis_url: str, client: TestClient) -> None:
    first, second, _ = (client.post(PATH).json() for _ in range(3))
    decide(settings_for(redis_url), payload_of(first))
    decide(settings_for(redis_url), payload_of(second), approve=False)
    text = client.get("/metrics").text
    assert "tglogin_login_requests_created_total 3.0" in text
    assert "tglogin_login_requests_approved_total 1.0" in text
    assert "tglogin_login_requests_denied_total 1.0" in text


# -- waiting ---------------------------------------------------------------------------------


def test_a_waiting_poll_answers_when_the_bot_decides(redis_url: str, client: TestClient) -> None:
    created = client.post(PATH).json()
    wait_until(lambda: waiters(client).subscribed, what="the decision listener")
    with ThreadPoolExecutor(1) as pool:
        poll = held_poll(pool, client, created)
        decide(settings_for(redis_url), payload_of(created))
        response = woken(poll)
    assert response.json()["status"] == "approved"
    assert waiters(client).waiting() == 0


def test_a_waiting_poll_with_no_decision_answers_pending_after_wait(client: TestClient) -> None:
    created = client.post(PATH).json()
    started = time.monotonic()
    response = client.get(f"{PATH}/{created['id']}?wait=1")
    took = time.monotonic() - started
    assert response.json()["status"] == "pending"
    assert took >= 1.0  # held for its `wait` ...
    assert took < 15, f"held {took:.1f} s for wait=1"  # ... not for the longest wait (30 s)


def test_a_held_poll_reads_the_request_a_bounded_number_of_times(
    redis_url: str, client: TestClient
) -> None:
    """Held by the decision listener, not by re-reading: a poll held 3 s with no decision
    reads the request when it starts and once more when `wait` runs out. A loop that
    re-read every 0.5 s would issue each of its commands 6 or 7 times."""
    created = client.post(PATH).json()
    wait_until(lambda: waiters(client).subscribed, what="the decision listener")
    url = f"{PATH}/{created['id']}"
    assert client.get(url).json()["status"] == "pending"  # the poll script is loaded now
    with redis.Redis.from_url(redis_url, decode_responses=True) as admin:
        admin.config_resetstat()
        started = time.monotonic()
        response = client.get(f"{url}?wait=3")
        took = time.monotonic() - started
        stats = admin.info("commandstats")
    assert response.json()["status"] == "pending"
    assert took >= 3.0
    calls = {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))  # the test's own
    }
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    hash_reads = sum(calls.get(name, 0) for name in ("hget", "hmget", "hgetall"))
    assert 1 <= scripts <= 3, calls
    assert 1 <= hash_reads <= 3, calls
    assert max(calls.values()) <= 3, calls  # no other command repeated in a loop either


def test_redis_loss_answers_waiting_polls_and_the_listener_comes_back(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    settings = settings_for(server.url)
    try:
        with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
            wait_until(lambda: waiters(client).subscribed, what="the decision listener")
            created = client.post(PATH).json()
            poll = held_poll(pool, client, created)
            server.stop()
            response = woken(poll)  # by the loss: at its deadline it would be a 503 too
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "unavailable"
            assert not waiters(client).subscribed

            server.start()  # an empty database: the old request is gone with it
            wait_until(lambda: waiters(client).subscribed, timeout=15, what="resubscribing")
            created = client.post(PATH).json()
            poll = held_poll(pool, client, created)
            decide(settings, payload_of(created))
            assert woken(poll).json()["status"] == "approved"
    finally:
        server.stop()


def test_the_listener_resubscribes_after_its_connection_is_killed(
    redis_url: str, client: TestClient
) -> None:
    wait_until(lambda: waiters(client).subscribed, what="the decision listener")
    with redis.Redis.from_url(redis_url) as admin:
        killed = admin.client_kill_filter(_type="pubsub")
    assert killed == 1
    created = client.post(PATH).json()
    wait_until(lambda: waiters(client).subscribed, timeout=10, what="resubscribing")
    with ThreadPoolExecutor(1) as pool:
        poll = held_poll(pool, client, created)
        decide(settings_for(redis_url), payload_of(created))
        assert woken(poll).json()["status"] == "approved"
