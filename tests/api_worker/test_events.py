"""GET /v1/events: a client's own events in order, `after`, `wait` woken by a new event,
the errors; and a bad EVENT_WEBHOOKS stopping the process with one line."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_worker.app import create_app
from shared.approvals import approval_id
from shared.events import Events
from shared.store import Store
from tests.fixtures.api import ANN, TestClient, api_settings
from tests.fixtures.common import run_module, wait_until
from tests.fixtures.store import run_on_store
from tests.fixtures.webhooks import new_secret

SHOP_KEY, BLOG_KEY = "shop-key-" + "s" * 24, "blog-key-" + "b" * 24
KEYS = f"shop:{SHOP_KEY},blog:{BLOG_KEY}"
SHOP, BLOG = {"X-API-Key": SHOP_KEY}, {"X-API-Key": BLOG_KEY}


@pytest.fixture
def api(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(redis_url, API_KEYS=KEYS))) as client:
        yield client


def emit(redis_url: str, type_: str, client: str, user: int = 1001, **data: Any) -> None:
    async def body(store: Store) -> None:
        await Events(store.redis).emit(user, type_, client, {"user": {**ANN, "id": user}, **data})

    run_on_store(api_settings(redis_url), body)


def pull(api: TestClient, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = api.get("/v1/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    found: dict[str, Any] = response.json()
    return found


def pull_until(api: TestClient, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The client's events once `count` of them were delivered to its pull stream."""
    def enough() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = pull(api, headers)["events"]
        return events if len(events) >= count else None

    found: list[dict[str, Any]] = wait_until(enough, timeout=15, what=f"{count} pulled events")
    return found


def test_a_client_pulls_its_own_events_in_order(api: TestClient, redis_url: str) -> None:
    emit(redis_url, "login.approved", "shop", id="req-1")
    emit(redis_url, "approval.denied", "blog", user=1002, id="ap-1")
    emit(redis_url, "user.logged_out", "shop", user=1003)
    emit(redis_url, "session.ended", "shop", id="req-1")
    emit(redis_url, "token.revoked", "shop")
    events = pull_until(api, SHOP, 4)
    # one user's events in the order they happened (other users' may come between)
    anns = [e for e in events if e["data"]["user"]["id"] == ANN["id"]]
    assert [e["type"] for e in anns] == ["login.approved", "session.ended", "token.revoked"]
    assert {e["type"] for e in events} - {e["type"] for e in anns} == {"user.logged_out"}
    assert anns[0]["data"] == {"user": ANN, "id": "req-1"}
    assert anns[0]["timestamp"].endswith("Z") and anns[0]["id"].count("-") == 1
    # the other client sees only its own
    (blogs,) = pull_until(api, BLOG, 1)
    assert blogs["type"] == "approval.denied" and blogs["data"]["id"] == "ap-1"
    # after: only what came later; next: the cursor to go on from
    later = pull(api, SHOP, after=events[0]["id"])
    assert [e["id"] for e in later["events"]] == [e["id"] for e in events[1:]]
    assert later["next"] == events[-1]["id"]
    assert pull(api, SHOP, after=events[-1]["id"]) == {"events": [], "next": events[-1]["id"]}


def test_an_approval_event_names_the_approval_by_its_id(
    api: TestClient, redis_url: str
) -> None:
    """The decision script has only the seed in the approval's record; the client sees
    the approval's id, made from it with AUTH_SECRET on the way out."""
    emit(redis_url, "approval.approved", "shop", approval_seed="s33d")
    (event,) = pull_until(api, SHOP, 1)
    assert event["data"] == {"user": ANN, "id": approval_id(api_settings(redis_url), 1001, "s33d")}


def test_wait_is_woken_by_a_new_event(api: TestClient, redis_url: str) -> None:
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            api.get("/v1/events", params={"wait": "30"}, headers=SHOP)
        )
    )
    began = time.monotonic()
    thread.start()
    waiters = api.app.state.waiters  # type: ignore[attr-defined]
    wait_until(lambda: waiters.waiting() >= 1, timeout=10, what="the poll to be held")
    emit(redis_url, "code.redeemed", "shop")
    thread.join(25)
    assert answers and answers[0].status_code == 200
    assert [e["type"] for e in answers[0].json()["events"]] == ["code.redeemed"]
    assert time.monotonic() - began < 20  # woken, not timed out at 30 s


def test_wait_ends_empty_when_nothing_comes(api: TestClient) -> None:
    assert pull(api, SHOP, wait="1") == {"events": [], "next": "0-0"}


@pytest.mark.parametrize(
    "params",
    [{"after": ""}, {"after": "x"}, {"after": "1-"}, {"after": "99999999999999999999-0"},
     {"after": "99999999999999-0"},  # the year 5138: no event has that id
     {"afer": "1-0"},  # misspelt: it would start from the oldest again
     {"wait": "31"}, {"wait": "-1"}, {"wait": "1.5"}],
)
def test_bad_after_or_wait_is_400(api: TestClient, params: dict[str, str]) -> None:
    response = api.get("/v1/events", params=params, headers=SHOP)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_without_a_valid_key_it_is_401(api: TestClient) -> None:
    assert api.get("/v1/events").status_code == 401
    assert api.get("/v1/events", headers={"X-API-Key": "x" * 30}).status_code == 401


def test_bad_event_webhooks_stop_the_process_with_one_line(tmp_path: Path) -> None:
    secret = new_secret()
    for entry, says in (
        ({"client": "nobody", "url": "https://a.example/h", "secret": secret}, "client"),
        ({"client": "shop", "url": "http://a.example/h", "secret": secret}, "https://"),
        ({"client": "shop", "url": "https://a.example/h", "secret": "whsec_" + "A" * 8},
         "secret"),
        ({"client": "shop", "url": "https://a.example/h", "secret": secret,
          "events": ["login.maybe"]}, "unknown event type"),
    ):
        done = run_module("api_worker", {
            "AUTH_SECRET": "z" * 40, "API_KEYS": KEYS, "EVENT_WEBHOOKS": json.dumps([entry]),
        }, tmp_path)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "EVENT_WEBHOOKS" in lines[0] and says in lines[0]
        assert str(entry["secret"])[6:] not in done.stderr + done.stdout
