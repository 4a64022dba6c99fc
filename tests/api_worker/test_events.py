"""GET /v1/events: a client's own events in order, `after`, `wait` woken by a new event,
the errors; a login decision's event moved from the request's stream, once, or twice
with one id after a move cut short; and a bad EVENT_WEBHOOKS stopping the process with
one line; each pulled event's `webhook_id` (its webhook's `webhook-id`), the same for
both copies of a duplicate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_worker.app import create_app
from shared import keys
from shared.approvals import approval_id
from shared.events import Events, client_hash, copy_login_event
from shared.logins import Logins
from shared.settings import ApiClient, Secret
from shared.store import Store
from tests.fixtures.api import ANN, API_SECRET, TestClient, api_settings
from tests.fixtures.common import run_module, wait_until
from tests.fixtures.store import run_on_store
from tests.fixtures.webhooks import Receiver, new_secret, receivers

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


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    yield from receivers()


def decide_login(redis_url: str, cut_short: bool) -> tuple[str, str]:
    """shop's login request approved by ANN while no deliverer runs: its event waits in
    the request's stream, its wake in the wake stream. With `cut_short`, the move's first
    step has run already (a deliverer killed before deleting the entry). The request's
    stream and the event's id prefix."""
    env = {"API_KEYS": KEYS, "TELEGRAM_BOT_USERNAME": "login_bot"}
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> tuple[str, str]:
        logins = Logins(store)
        created = await logins.create(shop, "s-7", "10.0.0.1")
        assert await logins.decide(created.payload, ANN, True) is not None
        id_hash = logins.id_hash(created.id)
        stream = keys.login_events(id_hash)
        (entry_id, fields), = await store.redis.xrange(stream)
        if cut_short:
            await copy_login_event(store.redis, ANN["id"], stream, str(entry_id), fields)
        return stream, f"evt_{ANN['id']}_l{id_hash[:16]}_{entry_id}"

    found: tuple[str, str] = run_on_store(api_settings(redis_url, **env), body)
    return found


def pull_stream_ids(redis_url: str) -> list[str]:
    """The webhook-ids (`w`) of shop's pull stream entries."""
    async def body(store: Store) -> list[str]:
        stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
        return [str(f["w"]) for _, f in await store.redis.xrange(stream)]

    found: list[str] = run_on_store(api_settings(redis_url), body)
    return found


def user_and_login_streams(redis_url: str, login_stream: str) -> tuple[int, int]:
    async def body(store: Store) -> tuple[int, int]:
        return (int(await store.redis.xlen(keys.events(ANN["id"]))),
                int(await store.redis.xlen(login_stream)))

    found: tuple[int, int] = run_on_store(api_settings(redis_url), body)
    return found


@pytest.mark.parametrize("cut_short", [False, True])
def test_a_login_event_is_moved_and_delivered_with_its_id(
    redis_url: str, receiver: Callable[..., Receiver], cut_short: bool
) -> None:
    """The decision's event reaches the pull API and the webhook with the id it has in
    the request's stream; a move cut short between its two steps (two slots) delivers
    it twice with that one id, never as two events."""
    login_stream, evt = decide_login(redis_url, cut_short)
    secret = new_secret()
    hook = receiver([secret])
    hooks = json.dumps([{"client": "shop", "url": hook.url, "secret": secret}])
    times = 2 if cut_short else 1
    app = create_app(api_settings(redis_url, API_KEYS=KEYS, EVENT_WEBHOOKS=hooks))
    with TestClient(app) as api:
        events = pull_until(api, SHOP, times)
        got = hook.wait(f"{times} deliveries", lambda: len(hook.accepted()) >= times
                        and hook.accepted())
        wait_until(lambda: user_and_login_streams(redis_url, login_stream) == (0, 0),
                   timeout=15, what="both streams to be delivered")
        time.sleep(0.3)  # nothing more comes
        assert len(hook.accepted()) == times and len(pull(api, SHOP)["events"]) == times
    assert [d.id for d in got] == [evt] * times
    assert all(d.verified_by == [secret] for d in got)
    assert [d.payload["type"] for d in got] == ["login.approved"] * times
    assert got[0].payload["data"] == {"user": ANN, "state": "s-7"}
    assert [(e["type"], e["data"]) for e in events] == [
        ("login.approved", {"user": ANN, "state": "s-7"})] * times
    assert pull_stream_ids(redis_url) == [evt] * times
    # pulled: one webhook_id (the webhook-id) for both copies, a cursor `id` each
    assert [e["webhook_id"] for e in events] == [evt] * times
    assert len({e["id"] for e in events}) == times


def append_again(redis_url: str, entry_id: str) -> None:
    """shop's pull stream entry appended once more, fields as they are: what a deliverer
    killed after appending it (before noting that) does when the event is delivered
    again."""
    async def body(store: Store) -> None:
        stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
        (_, fields), = await store.redis.xrange(stream, entry_id, entry_id)
        await store.redis.xadd(stream, fields)

    run_on_store(api_settings(redis_url), body)


def test_a_pulled_event_carries_its_webhook_id_the_same_for_a_duplicate(
    redis_url: str, receiver: Callable[..., Receiver]
) -> None:
    """`webhook_id` is the `webhook-id` its webhook had; appended twice, the event comes
    back under two cursor ids with one webhook_id (what a client deduplicates on)."""
    secret = new_secret()
    hook = receiver([secret])
    hooks = json.dumps([{"client": "shop", "url": hook.url, "secret": secret}])
    app = create_app(api_settings(redis_url, API_KEYS=KEYS, EVENT_WEBHOOKS=hooks))
    with TestClient(app) as api:
        emit(redis_url, "token.revoked", "shop", session="5e55")
        (event,) = pull_until(api, SHOP, 1)
        (got,) = hook.wait("the delivery", hook.accepted)
        assert event["webhook_id"] == got.id and got.id.startswith(f"evt_{ANN['id']}_")
        assert event["id"] != got.id and event["data"] == got.payload["data"]
        append_again(redis_url, event["id"])
        first, again = pull(api, SHOP)["events"]
        assert first == event
        assert again["id"] != event["id"] and again["webhook_id"] == event["webhook_id"]
        assert {k: again[k] for k in ("type", "timestamp", "data")} == {
            k: event[k] for k in ("type", "timestamp", "data")}
        # the cursor still goes by `id`: after the first copy comes the second
        later = pull(api, SHOP, after=event["id"])
        assert [e["id"] for e in later["events"]] == [again["id"]]
        assert later["next"] == again["id"]


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
