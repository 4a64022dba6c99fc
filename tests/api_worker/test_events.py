"""GET /v1/events: a client's own events in order, `after`, `wait` woken by a new event,
the errors, `gap` when a cursor fell behind what is kept; a login decision's event
moved from the request's stream, once, or twice with one id after a move cut short,
and ahead of the user's later events when another deliverer holds the user as its
wake comes; a wake backlog past any old cap stranding nothing; and a bad
EVENT_WEBHOOKS stopping the process with one line; each pulled event's `webhook_id`
(its webhook's `webhook-id`), the same for both copies of a duplicate; a wake (or a
login's note) read before its event's script ran, looked at again after the grace, on a
single server and a Cluster."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_worker.app import create_app
from api_worker.delivery import Deliverer
from shared import keys
from shared.approvals import approval_id
from shared.codes import now_ms
from shared.events import (
    Events,
    client_hash,
    copy_login_event,
    entry_ms,
    event_args,
    grace_ms,
    parse_note,
    queue_wake,
)
from shared.logins import Logins
from shared.redis import Unavailable, scripts
from shared.settings import ApiClient, Secret, Settings
from shared.store import Store
from tests.fixtures.api import ANN, API_SECRET, TestClient, api_settings
from tests.fixtures.common import run_module, wait_until
from tests.fixtures.store import run_on_store
from tests.fixtures.webhooks import HOLD, Receiver, new_secret, receivers

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
    assert pull(api, SHOP, after=events[-1]["id"]) == {
        "events": [], "next": events[-1]["id"], "gap": False}


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
    assert pull(api, SHOP, wait="1") == {"events": [], "next": "0-0", "gap": False}


def fill_pull_stream(redis_url: str, count: int, kept: int) -> list[str]:
    """`count` events appended to shop's pull stream by the script delivery appends with,
    keeping the last `kept` (trimmed each time one more piles up); every id added."""
    async def body(store: Store) -> list[str]:
        stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
        append = scripts(store.redis).get("event_pull.lua")
        data = json.dumps({"user": ANN})
        return [str(await append(keys=[stream], args=[
            kept, 1, "t", "code.redeemed", "d", data, "ts", "1750000000000", "w", f"evt_{n}",
        ])) for n in range(count)]

    found: list[str] = run_on_store(api_settings(redis_url), body)
    return found


def test_a_cursor_before_what_is_kept_says_gap(api: TestClient, redis_url: str) -> None:
    """A client more events behind than its pull stream keeps is told so: `gap` true,
    and the events from the oldest kept on, never a silent skip; a cursor whose next
    events are all kept has no gap; nor has a first pull (no `after`)."""
    ids = fill_pull_stream(redis_url, 30, kept=10)
    kept = ids[20:]
    for after in (ids[0], ids[18]):  # ids[19] (and maybe more) after it are gone
        behind = pull(api, SHOP, after=after, wait="30")  # answered at once
        assert behind["gap"] is True and [e["id"] for e in behind["events"]] == kept
        assert behind["next"] == kept[-1]
    for after in (ids[19], ids[25]):
        answer = pull(api, SHOP, after=after)
        assert answer["gap"] is False
        assert [e["id"] for e in answer["events"]] == ids[ids.index(after) + 1:]
    first = pull(api, SHOP)
    assert first["gap"] is False and [e["id"] for e in first["events"]] == kept
    # gap or not, the cursor goes on as ever
    assert pull(api, SHOP, after=kept[-1]) == {"events": [], "next": kept[-1], "gap": False}


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


def test_a_wake_backlog_strands_no_event(redis_url: str) -> None:
    """Wakes pile up while no API process runs (10,500 of them, past the 10,000 the wake
    stream used to be trimmed to): the oldest, ANN's, is still there, and her event is
    delivered once a deliverer starts."""
    emit(redis_url, "token.revoked", "shop", session="0ld")

    async def pile(store: Store) -> tuple[int, dict[str, str]]:
        for batch in range(21):
            async with store.redis.pipeline(transaction=False) as pipe:
                for n in range(500):
                    queue_wake(pipe, 500_000 + batch * 500 + n)  # users with no events
                await pipe.execute()
        (_, first), = await store.redis.xrange(keys.EVENT_WAKE, count=1)
        return int(await store.redis.xlen(keys.EVENT_WAKE)), first

    assert run_on_store(api_settings(redis_url), pile) == (10_501, {"u": str(ANN["id"])})
    with TestClient(create_app(api_settings(redis_url, API_KEYS=KEYS))) as api:
        (event,) = pull_until(api, SHOP, 1)
    assert event["type"] == "token.revoked" and event["data"]["session"] == "0ld"


async def until(what: str, condition: Callable[[], Any]) -> None:
    """Poll `condition` in the loop for up to 15 s."""
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mid_pass", [False, True])
def test_a_login_event_goes_first_whichever_process_holds_the_user(
    redis_url: str, receiver: Callable[..., Receiver], mid_pass: bool
) -> None:
    """Another process holds ANN when her deep-link login is approved for shop: the
    login's wake reaches a deliverer that cannot take her (so cannot move the event);
    then the session that login led to ends. Whoever delivers ANN next moves the noted
    login event in before shop's next event: shop gets login.approved before
    session.ended (webhook and pull stream). `mid_pass`: the holder is a deliverer in
    the middle of ANN's events (blog's, to an endpoint that takes its time, and whose
    failure holds back none of shop's); else the lock's holder finishes and a deliverer
    takes ANN when she is due."""
    secret = new_secret()
    shop_hook, blog_hook = receiver([secret]), receiver([secret], plan=[HOLD])
    hooks = json.dumps([
        {"client": "shop", "url": shop_hook.url, "secret": secret},
        {"client": "blog", "url": blog_hook.url, "secret": secret},
    ])
    settings = api_settings(redis_url, API_KEYS=KEYS, EVENT_WEBHOOKS=hooks,
                            TELEGRAM_BOT_USERNAME="login_bot", EVENT_TIMEOUT_SECONDS="8")
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> None:
        events, logins = Events(store.redis), Logins(store)
        created = await logins.create(shop, "s-8", "10.0.0.1")
        holder, other = Deliverer(settings, store.redis), Deliverer(settings, store.redis)
        lock = keys.event_lock(ANN["id"])
        try:
            if mid_pass:
                await events.emit(ANN["id"], "code.redeemed", "blog",
                                  {"user": ANN, "session": "b1"})
                delivering = asyncio.create_task(holder.deliver(ANN["id"]))
                await until("the holder's attempt to blog", lambda: blog_hook.held == 1)
            else:
                assert await store.redis.set(lock, "another-process", px=30_000)
            assert await logins.decide(created.payload, ANN, True) is not None
            wakes = await store.redis.xrange(keys.EVENT_WAKE)
            wake_id, wake = next((i, f) for i, f in wakes if "l" in f)
            assert not await other.deliver(ANN["id"])  # busy
            await other._wake(str(wake_id), wake["u"], wake["l"])
            await events.emit(ANN["id"], "session.ended", "shop", {"user": ANN, "session": "s1"})
            if mid_pass:
                blog_hook.release()  # blog's attempt fails (no answer): retried later
                assert await asyncio.wait_for(delivering, 30)
            else:
                await store.redis.delete(lock)
                assert await holder.deliver(ANN["id"])
        finally:
            await holder.close()
            await other.close()

    run_on_store(settings, body)
    first = shop_hook.wait("shop's first event", shop_hook.accepted)[0]
    assert first.payload["type"] == "login.approved"
    got = shop_hook.wait("shop's two events", lambda: len(shop_hook.accepted()) >= 2
                         and shop_hook.accepted())
    assert [d.payload["type"] for d in got] == ["login.approved", "session.ended"]
    assert [d.payload["data"].get("state") for d in got] == ["s-8", None]
    pulled = pull_stream_ids(redis_url)
    assert len(pulled) == 2 and pulled[0].startswith(f"evt_{ANN['id']}_l")
    if mid_pass:  # blog's event waits for its retry; shop's are out of ANN's stream
        (_, left), = user_stream(redis_url)
        assert left["c"] == "blog" and len(blog_hook.received) == 1
    else:
        assert user_stream(redis_url) == []


def user_stream(redis_url: str) -> list[Any]:
    async def body(store: Store) -> list[Any]:
        return list(await store.redis.xrange(keys.events(ANN["id"])))

    found: list[Any] = run_on_store(api_settings(redis_url), body)
    return found


def test_an_emptied_stream_is_deleted_even_right_after_its_last_event(
    api: TestClient, redis_url: str
) -> None:
    """Delivered within a second of being appended (a pull-only client), the user's
    last event leaves an empty stream kept a moment (its newest id is that recent); the
    deliverer comes back and deletes the key."""
    emit(redis_url, "code.redeemed", "shop", user=1002)  # the deliverers are reading
    pull_until(api, SHOP, 1)
    emit(redis_url, "token.revoked", "shop", session="5e55")
    pull_until(api, SHOP, 2)

    async def left(store: Store) -> int:
        return int(await store.redis.exists(keys.events(ANN["id"]), keys.event_retry(ANN["id"])))

    wait_until(lambda: run_on_store(api_settings(redis_url), left) == 0, timeout=15,
               what="the emptied stream's key to go")


def test_a_login_noted_for_a_holder_with_nothing_else_to_send_goes_out(
    redis_url: str,
) -> None:
    """ANN's lock is held when her login is approved: the login's wake reaches a
    deliverer that cannot take her, notes the login stream for the holder, and is done.
    ANN has no other event: the next pass (as the due loop runs it) finds her stream
    empty and still moves and delivers the login event; the note goes, and so does the
    emptied login stream."""
    settings = api_settings(redis_url, API_KEYS=KEYS, TELEGRAM_BOT_USERNAME="login_bot")
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> tuple[list[str], set[str], int, int]:
        logins = Logins(store)
        created = await logins.create(shop, "s-8", "10.0.0.1")
        holder, other = Deliverer(settings, store.redis), Deliverer(settings, store.redis)
        lock = keys.event_lock(ANN["id"])
        try:
            assert await store.redis.set(lock, "another-process", px=30_000)
            assert await logins.decide(created.payload, ANN, True) is not None
            wakes = await store.redis.xrange(keys.EVENT_WAKE)
            wake_id, wake = next((i, f) for i, f in wakes if "l" in f)
            await other._wake(str(wake_id), wake["u"], wake["l"])  # busy: noted, done
            await store.redis.delete(lock)
            assert await holder.deliver(ANN["id"])  # the due pass: nothing else to send
            pull = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
            return ([str(f["t"]) for _, f in await store.redis.xrange(pull)],
                    set(await store.redis.smembers(keys.event_logins(ANN["id"]))),
                    int(await store.redis.exists(wake["l"])),
                    int(await store.redis.xlen(keys.EVENT_WAKE)))
        finally:
            await holder.close()
            await other.close()

    assert run_on_store(settings, body) == (["login.approved"], set(), 0, 0)


def test_a_due_user_whose_pass_fails_stays_due(redis_url: str) -> None:
    """A user taken from the due set whose pass fails (Redis times out mid-pass, or the
    process is killed) is due again by itself, at the lock's end: not dropped until the
    user's next event. The next pass delivers the event and takes the user off."""
    settings = api_settings(redis_url, API_KEYS=KEYS)

    async def body(store: Store) -> tuple[float | None, float | None, list[str], int]:
        await Events(store.redis).emit(ANN["id"], "token.revoked", "shop",
                                       {"user": ANN, "session": "x"})
        await store.redis.delete(keys.EVENT_WAKE)  # its wake was handled earlier
        await store.redis.zadd(keys.EVENT_DUE, {str(ANN["id"]): time.time() * 1000})
        deliverer = Deliverer(settings, store.redis)
        real = deliverer.users._to_pull_stream

        async def stalled(*args: Any, **kwargs: Any) -> None:
            raise Unavailable("Timeout reading from socket")

        deliverer.users._to_pull_stream = stalled  # type: ignore[method-assign]
        try:
            before = time.time() * 1000
            await deliverer._deliver_logged(ANN["id"])  # "it will be retried"
            leased = await store.redis.zscore(keys.EVENT_DUE, str(ANN["id"]))
            assert leased is not None and leased >= before + deliverer.users._lock_ms
            deliverer.users._to_pull_stream = real  # type: ignore[method-assign]
            await store.redis.zadd(keys.EVENT_DUE, {str(ANN["id"]): before})  # its lease ran out
            await deliverer._deliver_logged(ANN["id"])
            pull = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
            return (leased, await store.redis.zscore(keys.EVENT_DUE, str(ANN["id"])),
                    [str(f["t"]) for _, f in await store.redis.xrange(pull)],
                    int(await store.redis.exists(keys.events(ANN["id"]))))
        finally:
            await deliverer.close()

    leased, after, pulled, left = run_on_store(settings, body)
    assert leased is not None and pulled == ["token.revoked"]
    # emptied: its key gone and the user off the set, or kept a moment (its last id is
    # that recent) and the user due again shortly to delete it
    assert (left, after) == (0, None) or (left == 1 and after is not None
                                          and after < time.time() * 1000 + 5_000)


def test_a_note_made_during_a_pass_outlives_its_end(redis_url: str) -> None:
    """A pass leases its user in the due set; another process that finds the user busy
    notes it due meanwhile, however late the lease: the pass's end keeps that note
    (someone looks again), where an untouched lease is removed or re-scored."""
    async def body(store: Store) -> list[float | None]:
        due = scripts(store.redis).get("event_due.lua")
        now = int(time.time() * 1000)
        found: list[float | None] = []
        for lease, note, end_due in (
            (now + 15_000, None, ""),  # untouched: removed
            (now + 15_000, None, now + 60_000),  # untouched: re-scored
            (now + 15_000, now + 1_000, ""),  # noted earlier than the lease: kept
            (now - 5_000, now + 1_000, ""),  # a lease run out, then noted: kept
            (now + 500, now + 1_000, ""),  # noted later than the lease: kept
            (now + 15_000, now + 1_000, now + 60_000),  # noted: the earlier time wins
        ):
            await store.redis.zadd(keys.EVENT_DUE, {"7": f"{lease}.5"})
            if note is not None:
                await due(keys=[keys.EVENT_DUE], args=[7, note, ""])
            await due(keys=[keys.EVENT_DUE], args=[7, end_due, f"{lease}.5"])
            found.append(await store.redis.zscore(keys.EVENT_DUE, "7"))
        return found

    now = int(time.time() * 1000)
    found = run_on_store(api_settings(redis_url), body)
    assert found[0] is None and found[1] is not None and found[1] > now + 50_000
    assert all(score is not None and score < now + 5_000 for score in found[2:]), found


def test_the_delivery_lock_outlasts_redis_timeouts(redis_url: str) -> None:
    """The lock's margin past one attempt holds a few Redis commands at their deadline:
    with REDIS_TIMEOUT above 5 s it grows with it."""
    for timeout, least in (("1", 10_000 + 5_000), ("20", 10_000 + 4 * 20_000)):
        settings = api_settings(redis_url, API_KEYS=KEYS, REDIS_TIMEOUT=timeout,
                                EVENT_TIMEOUT_SECONDS="10")

        async def body(store: Store) -> int:
            deliverer = Deliverer(settings, store.redis)  # noqa: B023
            try:
                return int(deliverer.users._lock_ms)
            finally:
                await deliverer.close()

        assert run_on_store(settings, body) == least


def test_a_login_event_outlives_its_request(redis_url: str) -> None:
    """A decided login's event stream is kept a day past EVENT_RETRY_SECONDS, not the
    request's TTL (10 s here): an API down, or a wake backlog, longer than the request
    lives still finds it to move. The request's own key keeps its TTL."""
    settings = api_settings(redis_url, API_KEYS=KEYS, TELEGRAM_BOT_USERNAME="login_bot",
                            LOGIN_REQUEST_TTL_SECONDS="10", EVENT_RETRY_SECONDS="3600")
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> tuple[int, int]:
        logins = Logins(store)
        created = await logins.create(shop, "s-9", "10.0.0.1")
        assert await logins.decide(created.payload, ANN, True) is not None
        id_hash = logins.id_hash(created.id)
        return (int(await store.redis.pttl(keys.login_events(id_hash))),
                int(await store.redis.pttl(keys.login(id_hash))))

    stream_ttl, request_ttl = run_on_store(settings, body)
    assert stream_ttl > (3600 + 86400 - 60) * 1000
    assert 0 < request_ttl <= 10_000


def test_a_pull_stream_keeps_an_approvals_seed_not_its_id(
    api: TestClient, redis_url: str
) -> None:
    """An approval's id is made as a client reads it: its pull stream, like the user's
    stream and the dead letters, holds the seed, so a copy of Redis gives no id."""
    emit(redis_url, "approval.denied", "shop", approval_seed="s44d")
    (event,) = pull_until(api, SHOP, 1)
    the_id = approval_id(api_settings(redis_url), 1001, "s44d")
    assert event["data"] == {"user": ANN, "id": the_id}

    async def body(store: Store) -> list[str]:
        stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
        return [str(value) for _, fields in await store.redis.xrange(stream)
                for value in fields.values()]

    stored = run_on_store(api_settings(redis_url), body)
    assert not any(the_id in value for value in stored)
    assert any('"approval_seed":"s44d"' in value for value in stored)


# -- a wake read before its event (issue 10 item 3) ------------------------------------
# Every flow queues its wake (and a login's note) before the script that appends the
# event: on a Cluster those are different nodes, and a deliverer may read the wake
# before the script has run. These tests write the wake alone, let a running deliverer
# handle it, and only then run the flow's script alone.

EARLY = {"API_KEYS": KEYS, "TELEGRAM_BOT_USERNAME": "login_bot", "REDIS_TIMEOUT": "1"}


async def until_async(what: str, condition: Callable[[], Any], within: float = 15) -> Any:
    """Await `condition()` every 20 ms until it is truthy (its value), for up to
    `within` s."""
    deadline = time.monotonic() + within
    while not (found := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return found


async def wake_alone(store: Store, login_stream: str | None = None) -> int:
    """Queue only a wake (and a login's note) for ANN, as a flow's pipeline does before
    its script; wait for the running deliverer to handle it; the wake's time (ms)."""
    async with store.redis.pipeline(transaction=False) as pipe:
        queue_wake(pipe, ANN["id"], login_stream)
        await pipe.execute()
    (wake_id, _), = await store.redis.xrange(keys.EVENT_WAKE)

    async def handled() -> bool:
        return int(await store.redis.xlen(keys.EVENT_WAKE)) == 0

    await until_async("the wake to be handled", handled)
    return entry_ms(str(wake_id))


async def pulled_types(store: Store) -> list[str]:
    stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
    return [str(f["t"]) for _, f in await store.redis.xrange(stream)]


def early_wake_is_delivered(settings: Settings) -> tuple[int, int, int, list[str]]:
    """A wake handled before its event's script ran (nothing to deliver then), then the
    script alone: the wake's time, when ANN was left due, when her event reached shop's
    pull stream, and what did."""
    grace = grace_ms(settings)

    async def body(store: Store) -> tuple[int, int, int, list[str]]:
        deliverer = Deliverer(settings, store.redis)
        deliverer.start()
        try:
            woke = await wake_alone(store)
            due = int(float(await store.redis.zscore(keys.EVENT_DUE, str(ANN["id"])) or 0))
            assert now_ms() < woke + grace, "too slow a machine for this test"
            await scripts(store.redis).get("event_emit.lua")(
                keys=[keys.events(ANN["id"])],
                args=event_args("token.revoked", "shop", {"user": ANN, "session": "e4"}),
            )
            types = await until_async("the event to be delivered",
                                      lambda: pulled_types(store), within=grace / 1000 + 15)
            return woke, due, now_ms(), types
        finally:
            await deliverer.close()

    found: tuple[int, int, int, list[str]] = run_on_store(settings, body)
    return found


def test_a_wake_read_before_its_event_delivers_it_after_the_grace(redis_url: str) -> None:
    """The wake's pass finds nothing; the wake is young, so ANN is left due at its time
    plus the grace (2 x REDIS_TIMEOUT + 1 s = 3 s here); that revisit delivers the event
    the script appended meanwhile."""
    settings = api_settings(redis_url, **EARLY)
    woke, due, delivered, types = early_wake_is_delivered(settings)
    assert due == woke + grace_ms(settings) == woke + 3000
    assert types == ["token.revoked"]
    assert delivered >= due - 50  # by the revisit, not before (one clock, ms)


def test_a_wake_read_before_its_event_delivers_it_on_a_cluster(
    cluster_env: dict[str, str]
) -> None:
    """The same on a real 3-node Cluster, where the wake stream and ANN's stream are on
    different nodes."""
    settings = api_settings("", **cluster_env, **EARLY)
    woke, due, _, types = early_wake_is_delivered(settings)
    assert due == woke + grace_ms(settings)
    assert types == ["token.revoked"]


def test_a_young_wake_whose_pass_sent_another_event_still_looks_again(
    redis_url: str,
) -> None:
    """ANN has an older event waiting (its own wake handled elsewhere, or a retry come
    due) when a new wake is read before its script ran: that pass sends the older event
    only. The new event, appended within the grace, still goes out by itself (the young
    wake is a note each pass keeps until its grace ends), not only with ANN's next
    wake."""
    settings = api_settings(redis_url, **{**EARLY, "REDIS_TIMEOUT": "3"})  # 7 s grace
    grace = grace_ms(settings)

    async def body(store: Store) -> list[Any]:
        emit = scripts(store.redis).get("event_emit.lua")
        user_stream = keys.events(ANN["id"])

        async def append(session: str) -> None:
            await emit(keys=[user_stream], args=event_args(
                "token.revoked", "shop", {"user": ANN, "session": session}))

        def sent(count: int) -> Callable[[], Any]:
            async def enough() -> bool:
                return len(await pulled_types(store)) >= count
            return enough

        await append("older")  # its wake is not this test's
        deliverer = Deliverer(settings, store.redis)
        deliverer.start()
        try:
            woke = await wake_alone(store)  # the new event's wake, read first
            await until_async("the older event to go out", sent(1))

            async def tidied() -> bool:  # the emptied stream's key deleted: its own look
                return not await store.redis.exists(user_stream)

            await until_async("ANN's emptied stream to be deleted", tidied)
            assert now_ms() < woke + grace, "too slow a machine for this test"
            await append("newer")  # its script lands within the grace
            await until_async("the newer event to go out", sent(2), within=grace / 1000 + 15)
            stream = keys.event_client(client_hash(Secret(API_SECRET), "shop"))
            return [json.loads(f["d"])["session"] for _, f in await store.redis.xrange(stream)]
        finally:
            await deliverer.close()

    assert run_on_store(settings, body) == ["older", "newer"]


def test_a_login_note_whose_decision_never_comes_is_dropped_after_the_grace(
    redis_url: str,
) -> None:
    """A bot killed after its note and wake and before its decision: the wake finds the
    login stream gone; the note is kept while younger than the grace (ANN due when it
    ends), then dropped, and nothing is delivered."""
    settings = api_settings(redis_url, **EARLY)
    grace = grace_ms(settings)
    login_stream = keys.login_events("cd" * 16)

    async def body(store: Store) -> tuple[set[str], int, int, int, int]:
        deliverer = Deliverer(settings, store.redis)
        deliverer.start()
        noted = keys.event_logins(ANN["id"])
        try:
            woke = await wake_alone(store, login_stream)
            kept = set(await store.redis.smembers(noted))
            assert now_ms() < woke + grace, "too slow a machine for this test"
            due = int(float(await store.redis.zscore(keys.EVENT_DUE, str(ANN["id"])) or 0))

            async def dropped() -> bool:
                return not await store.redis.exists(noted) and await store.redis.zscore(
                    keys.EVENT_DUE, str(ANN["id"])) is None

            await until_async("the note to be dropped", dropped, within=grace / 1000 + 15)
            return kept, woke, due, now_ms(), len(await pulled_types(store))
        finally:
            await deliverer.close()

    kept, woke, due, gone, delivered = run_on_store(settings, body)
    # the bot's note, and the deliverer's for the young wake (the bot's may be lost on
    # a Cluster), each with its own time
    notes = [parse_note(note) for note in kept]
    assert notes and all(stream == login_stream and at <= woke + 50 for stream, at in notes)
    assert due == min(at for _, at in notes) + grace
    assert gone >= due - 50 and delivered == 0


@pytest.mark.parametrize("ended_at_once", [False, True])
def test_a_login_decided_within_the_grace_goes_out_before_a_later_session_end(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, ended_at_once: bool
) -> None:
    """A deep-link decision's note and wake are handled before its script runs (the
    note is kept, young); then the script alone decides. The login event is moved and
    delivered (by the revisit when the grace ends; `ended_at_once`: by the pass for the
    session.ended emitted right after it) and goes out before that session.ended."""
    settings = api_settings(redis_url, **EARLY)
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> tuple[list[str], set[str]]:
        logins, events = Logins(store), Events(store.redis)
        created = await logins.create(shop, "s-10", "10.0.0.1")
        login_stream = keys.login_events(logins.id_hash(created.id))
        deliverer = Deliverer(settings, store.redis)
        deliverer.start()
        try:
            woke = await wake_alone(store, login_stream)
            assert now_ms() < woke + grace_ms(settings), "too slow a machine for this test"
            with monkeypatch.context() as patched:  # the decision's script alone
                patched.setattr("shared.logins.queue_wake", lambda *_: None)
                assert await logins.decide(created.payload, ANN, True) is not None
            assert int(await store.redis.xlen(login_stream)) == 1
            if not ended_at_once:
                await until_async("the login event", lambda: pulled_types(store),
                                  within=grace_ms(settings) / 1000 + 15)
            await events.emit(ANN["id"], "session.ended", "shop", {"user": ANN, "session": "s1"})

            async def both() -> list[str] | None:
                found = await pulled_types(store)
                return found if len(found) >= 2 else None

            types: list[str] = await until_async("both events", both,
                                                 within=grace_ms(settings) / 1000 + 15)

            async def no_notes() -> bool:  # the young wakes' notes, dropped after the grace
                return not await store.redis.exists(keys.event_logins(ANN["id"]))

            await until_async("the notes to be dropped", no_notes,
                              within=grace_ms(settings) / 1000 + 15)
            return types, set(await store.redis.smembers(keys.event_logins(ANN["id"])))
        finally:
            await deliverer.close()

    types, notes = run_on_store(settings, body)
    assert types == ["login.approved", "session.ended"] and notes == set()


def _sweep_finds_events_without_wakes(settings: Settings, monkeypatch: pytest.MonkeyPatch
                                      ) -> tuple[int, int, list[str]]:
    """ANN's event appended by its script alone and a deep-link login decided for her by
    its script alone (their wakes lost, as on a Cluster a wake re-sent after the event's
    node, or one a failover lost): the sweep notes her due and both go out. What the
    first sweep noted, what a second one right after did (another process's turn: none),
    and what went out."""
    shop = ApiClient(name="shop", key=Secret(SHOP_KEY))

    async def body(store: Store) -> tuple[int, int, list[str]]:
        logins, emit = Logins(store), scripts(store.redis).get("event_emit.lua")
        created = await logins.create(shop, "s-20", "10.0.0.1")
        with monkeypatch.context() as patched:  # the decision's script alone
            patched.setattr("shared.logins.queue_wake", lambda *_: None)
            assert await logins.decide(created.payload, ANN, True) is not None
        await emit(keys=[keys.events(ANN["id"])], args=event_args(
            "token.revoked", "shop", {"user": ANN, "session": "s0"}))
        assert not await store.redis.exists(keys.EVENT_WAKE)
        deliverer = Deliverer(settings, store.redis)
        deliverer.start()
        try:
            swept = await deliverer.sweep()
            again = await deliverer.sweep()

            async def both() -> list[str] | None:
                found = await pulled_types(store)
                return found if len(found) >= 2 else None

            return swept, again, await until_async("both events", both)
        finally:
            await deliverer.close()

    found: tuple[int, int, list[str]] = run_on_store(settings, body)
    return found


def test_the_sweep_delivers_events_whose_wakes_were_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    swept, again, types = _sweep_finds_events_without_wakes(
        api_settings(redis_url, **EARLY), monkeypatch)
    assert (swept, again) == (1, 0)
    assert types == ["login.approved", "token.revoked"]


def test_the_sweep_covers_every_node_of_a_cluster(
    cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    swept, again, types = _sweep_finds_events_without_wakes(
        api_settings("", **cluster_env, **EARLY), monkeypatch)
    assert (swept, again) == (1, 0)
    assert sorted(types) == ["login.approved", "token.revoked"]


def test_the_events_key_of_a_user_names_that_user() -> None:
    assert keys.events_user(keys.events(5001)) == 5001
    for other in (keys.event_logins(5001), keys.login_events("ab" * 16), "tgl:ev:{ux}",
                  "tgl:ev:5001", keys.EVENT_WAKE):
        assert keys.events_user(other) is None
