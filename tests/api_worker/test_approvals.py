"""POST /v1/approvals and GET /v1/approvals/{id}: in-process app, real Redis.

The bot's side (a tap, an undeliverable send) is `shared.approvals` called exactly as the
bot calls it; tests/e2e/test_approvals.py runs the real bot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_worker.app import create_app
from api_worker.waiters import Waiters
from shared.approvals import Approvals
from shared.settings import Settings
from tests.fixtures.api import ANN, TestClient, api_settings
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store

KEYS = "shop.example:shop-key-0123456789abcdefgh,blog.example:blog-key-0123456789abcdefgh"
SHOP = {"X-API-Key": "shop-key-0123456789abcdefgh"}
BLOG = {"X-API-Key": "blog-key-0123456789abcdefgh"}
PATH = "/v1/approvals"
HOLD = 30
WOKEN_WITHIN = 20.0
BOB: Any = {**ANN, "id": 1002, "username": "bob"}


def settings_for(redis_url: str, **env: str) -> Settings:
    return api_settings(redis_url, **{"API_KEYS": KEYS, **env})


def known(settings: Settings, *users: Any) -> None:
    """Users who logged in through the bot (what a login records)."""

    async def enter(store: Any) -> None:
        for user in users:
            await store.sessions.enter(user)

    run_on_store(settings, enter)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    found = settings_for(redis_url)
    known(found, ANN, BOB)
    return found


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=SHOP) as client:
        yield client


def tap(settings: Settings, approval_id: str, approve: bool = True, user: Any = ANN,
        pick: int | None = None) -> None:
    async def decide(store: Any) -> None:
        approvals = Approvals(store.redis, settings)
        await approvals.decide(user, approvals.key_hash(approval_id), approve, pick)

    run_on_store(settings, decide)


def waiters(client: TestClient) -> Waiters:
    found: Waiters = client.app.state.waiters  # type: ignore[attr-defined]
    return found


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(PATH, json={"user_id": ANN["id"], "text": "Pay 10 EUR", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_then_pending(client: TestClient) -> None:
    created = create(client, state="order-7")
    assert set(created) == {"id", "expires_in"} and created["expires_in"] == 300
    assert created["id"].startswith(f"{ANN['id']}.")
    response = client.get(f"{PATH}/{created['id']}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "pending" and body["state"] == "order-7"
    assert 295 <= body["expires_in"] <= 300


def test_match_gives_a_number(client: TestClient) -> None:
    created = create(client, match=True)
    assert 10 <= created["match_number"] <= 99


def test_unknown_user_is_404(client: TestClient) -> None:
    response = client.post(PATH, json={"user_id": 777, "text": "Pay"})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_user"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_id": 1001},
        {"text": "Pay"},
        {"user_id": "1001", "text": "Pay"},
        {"user_id": True, "text": "Pay"},
        {"user_id": 0, "text": "Pay"},
        {"user_id": 1.5, "text": "Pay"},
        {"user_id": 1001, "text": ""},
        {"user_id": 1001, "text": "   "},
        {"user_id": 1001, "text": "x" * 201},
        {"user_id": 1001, "text": "Pay\u202eRUE 01"},
        {"user_id": 1001, "text": "Pay\x00"},
        {"user_id": 1001, "text": "Pay", "state": "s" * 129},
        {"user_id": 1001, "text": "Pay", "match": "yes"},
        {"user_id": 1001, "text": "Pay", "extra": 1},
    ],
)
def test_create_refuses_a_bad_body(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(PATH, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "raw", [b'{"user_id": 1001, "text": "Pay \\ud800"}', b'{"user_id": 1001, "text": "\xff"}']
)
def test_text_that_is_not_unicode_is_400(client: TestClient, raw: bytes) -> None:
    response = client.post(PATH, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_line_breaks_and_markup_are_text(client: TestClient) -> None:
    create(client, text="Pay <b>10</b> *EUR*\nto [me](https://evil.example)")


def test_api_key_is_required(client: TestClient) -> None:
    response = client.post(PATH, json={"user_id": 1001, "text": "Pay"}, headers={"X-API-Key": ""})
    assert response.status_code == 401
    created = create(client)
    assert client.get(f"{PATH}/{created['id']}", headers={"X-API-Key": ""}).status_code == 401


def test_another_clients_approval_is_404(client: TestClient) -> None:
    created = create(client)
    response = client.get(f"{PATH}/{created['id']}", headers=BLOG)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    forged = created["id"].replace(f"{ANN['id']}.", f"{BOB['id']}.")
    assert client.get(f"{PATH}/{forged}").status_code == 404
    assert client.get(f"{PATH}/nonsense").status_code == 404


@pytest.mark.parametrize("wait", ["-1", "31", "x", "1.5", "٣"])
def test_wait_out_of_range_is_400(client: TestClient, wait: str) -> None:
    created = create(client)
    assert client.get(f"{PATH}/{created['id']}", params={"wait": wait}).status_code == 400


def test_decisions_are_read_with_the_deciding_user(settings: Settings, client: TestClient) -> None:
    approved, denied = create(client, state="a"), create(client)
    tap(settings, approved["id"])
    tap(settings, denied["id"], approve=False)
    tap(settings, approved["id"], approve=False)  # too late: the first counts
    body = client.get(f"{PATH}/{approved['id']}").json()
    assert body == {"status": "approved", "user": ANN, "state": "a"}
    assert client.get(f"{PATH}/{approved['id']}").json() == body  # read again, the same
    assert client.get(f"{PATH}/{denied['id']}").json() == {"status": "denied", "user": ANN}


def test_a_held_poll_is_woken_by_the_tap(settings: Settings, client: TestClient) -> None:
    created = create(client)

    def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = client.get(f"{PATH}/{created['id']}", params={"wait": HOLD})
        return response, time.monotonic() - started

    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(timed)
        wait_until(lambda: waiters(client).waiting() == 1, what="the poll to be held")
        tap(settings, created["id"])
        response, took = poll.result(timeout=HOLD + 15)
    assert response.json()["status"] == "approved"
    assert took < WOKEN_WITHIN, f"answered after {took:.1f} s: by its deadline, not the tap"


def test_a_held_poll_answers_expired_at_the_expiry(redis_url: str) -> None:
    settings = settings_for(redis_url, APPROVAL_TTL_SECONDS="3")
    known(settings, ANN)
    with TestClient(create_app(settings), headers=SHOP) as client:
        created = create(client)
        started = time.monotonic()
        response = client.get(f"{PATH}/{created['id']}", params={"wait": HOLD})
        took = time.monotonic() - started
        assert response.json() == {"status": "expired"}
        assert took < WOKEN_WITHIN, f"held {took:.1f} s past a 3 s lifetime"
        tap(settings, created["id"])  # a tap after the expiry decides nothing
        assert client.get(f"{PATH}/{created['id']}").json() == {"status": "expired"}


def test_per_user_limit_is_429_with_retry_after(redis_url: str) -> None:
    settings = settings_for(redis_url, APPROVAL_USER_LIMIT="2")
    known(settings, ANN, BOB)
    with TestClient(create_app(settings), headers=SHOP) as client:
        create(client)
        create(client)
        refused = client.post(PATH, json={"user_id": ANN["id"], "text": "Pay"})
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        # the shop spent its budget for Ann; another client's approval for her still goes
        assert client.post(PATH, json={"user_id": ANN["id"], "text": "Pay"},
                           headers=BLOG).status_code == 201
        assert client.post(PATH, json={"user_id": BOB["id"], "text": "Pay"}).status_code == 201


def test_per_user_total_limit_is_429_across_clients(redis_url: str) -> None:
    settings = settings_for(redis_url, APPROVAL_USER_LIMIT="2", APPROVAL_USER_TOTAL_LIMIT="3")
    known(settings, ANN, BOB)
    with TestClient(create_app(settings), headers=SHOP) as client:
        create(client)
        create(client)
        assert client.post(PATH, json={"user_id": ANN["id"], "text": "Pay"},
                           headers=BLOG).status_code == 201
        refused = client.post(PATH, json={"user_id": ANN["id"], "text": "Pay"}, headers=BLOG)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        assert client.post(PATH, json={"user_id": BOB["id"], "text": "Pay"},
                           headers=BLOG).status_code == 201


def test_per_client_limit_is_429_with_retry_after(redis_url: str) -> None:
    settings = settings_for(redis_url, APPROVAL_CLIENT_LIMIT="2")
    known(settings, ANN, BOB)
    with TestClient(create_app(settings), headers=SHOP) as client:
        create(client)
        assert client.post(PATH, json={"user_id": 4242, "text": "Pay"}).status_code == 404
        refused = client.post(PATH, json={"user_id": BOB["id"], "text": "Pay"})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        again = client.post(PATH, json={"user_id": BOB["id"], "text": "Pay"}, headers=BLOG)
        assert again.status_code == 201


def test_metrics_count_approvals(settings: Settings, client: TestClient) -> None:
    created = create(client)
    tap(settings, created["id"])
    metrics = client.get("/metrics").text
    assert "tglogin_approvals_created_total 1" in metrics
    assert "tglogin_approvals_approved_total 1" in metrics


def test_redis_down_is_503(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    settings = settings_for(server.url, REDIS_TIMEOUT="1")
    known(settings, ANN)
    try:
        with TestClient(create_app(settings), headers=SHOP) as client:
            created = create(client)
            server.stop()
            for response in (
                client.post(PATH, json={"user_id": ANN["id"], "text": "Pay"}),
                client.get(f"{PATH}/{created['id']}"),
                client.get(f"{PATH}/{created['id']}", params={"wait": 5}),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "unavailable"
    finally:
        server.stop()
