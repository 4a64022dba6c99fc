"""Every event type emitted by the flow that makes its change (shared.events' contract),
read as the client reads it: the API in-process (its lifespan runs the delivery) and
GET /v1/events with the client's key. Nothing for an open API; per-user order; the
changed scripts on a real Cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from api_worker.app import create_app
from shared import keys
from shared.approvals import Approvals
from shared.codes import now_ms
from shared.events import EVENT_TYPES, login_events_ttl_ms, move_login_events, parse_note
from shared.logins import Logins
from shared.settings import ApiClient, Secret, Settings
from shared.store import Store
from shared.tokens import unseal
from tests.fixtures.api import ANN, API_SECRET, TestClient, api_settings, issue_code
from tests.fixtures.common import wait_until
from tests.fixtures.store import run_on_store

SHOP_KEY, BLOG_KEY = "shop-key-" + "s" * 24, "blog-key-" + "b" * 24
KEYS = f"shop:{SHOP_KEY},blog:{BLOG_KEY}"
SHOP, BLOG = {"X-API-Key": SHOP_KEY}, {"X-API-Key": BLOG_KEY}
SHOP_CLIENT = ApiClient(name="shop", key=Secret(SHOP_KEY))
ENV = {"API_KEYS": KEYS, "TELEGRAM_BOT_USERNAME": "login_bot", "APPROVAL_TTL_SECONDS": "2"}
OPEN_ENV = {"TELEGRAM_BOT_USERNAME": "login_bot"}


@pytest.fixture
def api(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(redis_url, **ENV))) as client:
        yield client


@pytest.fixture
def open_api(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(redis_url, **OPEN_ENV))) as client:
        yield client


def settings(redis_url: str, **env: str) -> Settings:
    return api_settings(redis_url, **{**ENV, **env})


def pulled(api: TestClient, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The client's events once `count` of them are in its pull stream."""
    def enough() -> list[dict[str, Any]] | None:
        response = api.get("/v1/events", headers=headers)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events if len(events) >= count else None

    found: list[dict[str, Any]] = wait_until(enough, timeout=15, what=f"{count} events")
    return found


def only_events(api: TestClient, redis_url: str, count: int) -> list[dict[str, Any]]:
    """shop's events once `count` are pulled and the user's stream is delivered: exactly
    `count`, and none for blog (an event goes to the client it concerns)."""
    pulled(api, SHOP, count)
    wait_until(lambda: stream_length(redis_url) == 0, timeout=15,
               what="the user's stream to be delivered")
    events = pulled(api, SHOP, count)
    assert len(events) == count, events
    assert api.get("/v1/events", headers=BLOG).json()["events"] == []
    return events


def redeem(api: TestClient, redis_url: str, headers: dict[str, str]) -> dict[str, Any]:
    code = issue_code(settings(redis_url))
    response = api.post("/v1/codes/redeem", json={"code": code}, headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def session_of(token: str) -> str:
    claims = unseal(Secret(API_SECRET), token)
    assert claims is not None
    return claims.token_id


def stream_length(redis_url: str, user_id: int = ANN["id"]) -> int:
    """How many events the user's stream holds (undelivered, or never woken)."""
    async def body(store: Store) -> int:
        return int(await store.redis.xlen(keys.events(user_id)))

    return run_on_store(api_settings(redis_url), body)




def on_store(redis_url: str, body: Any, **env: str) -> Any:
    return run_on_store(settings(redis_url, **env), body)


def create_login(api: TestClient, state: str | None) -> tuple[str, str]:
    """A login request of shop's: (its id, its deep-link payload)."""
    response = api.post("/v1/login-requests", json={} if state is None else {"state": state},
                        headers=SHOP)
    assert response.status_code == 201, response.text
    found = response.json()
    return found["id"], found["deep_link"].rsplit("=", 1)[1]


def create_approval(api: TestClient, state: str | None = None) -> str:
    body: dict[str, Any] = {"user_id": ANN["id"], "text": "Pay 10 EUR"}
    if state is not None:
        body["state"] = state
    response = api.post("/v1/approvals", json=body, headers=SHOP)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- one test per event type ------------------------------------------------------------------


def test_code_redeemed(api: TestClient, redis_url: str) -> None:
    token = redeem(api, redis_url, SHOP)["access_token"]
    (event,) = only_events(api, redis_url, 1)
    assert event["type"] == "code.redeemed"
    assert event["data"] == {"user": ANN, "session": session_of(token)}


def test_concurrent_redeems_of_one_code_emit_one_event(redis_url: str) -> None:
    """The losers' register ran (another slot than the code's), and took its event back."""
    async def body(store: Store) -> list[dict[str, Any]]:
        issued = await store.issue_code(ANN)
        assert issued is not None
        tries = await asyncio.gather(
            *(store.redeem_code(issued.code, f"10.0.0.{n}", SHOP_CLIENT) for n in range(8)),
            return_exceptions=True)
        (won,) = [t for t in tries if not isinstance(t, BaseException)]
        entries = await store.redis.xrange(keys.events(ANN["id"]))
        assert [json.loads(f["d"])["session"] for _, f in entries] == [
            session_of(won.access_token)]
        return [json.loads(f["d"]) for _, f in entries]

    (data,) = on_store(redis_url, body)
    assert data["user"] == ANN


def test_token_revoked_once(api: TestClient, redis_url: str) -> None:
    token = redeem(api, redis_url, SHOP)["access_token"]
    for _ in range(2):  # the second revoke ends nothing: no event
        api.post("/v1/tokens/revoke", headers={**SHOP, "Authorization": f"Bearer {token}"})
    redeemed, revoked = only_events(api, redis_url, 2)
    assert redeemed["type"] == "code.redeemed" and revoked["type"] == "token.revoked"
    assert revoked["data"] == {"user": ANN, "session": session_of(token)}


def test_session_ended_from_the_bot(api: TestClient, redis_url: str) -> None:
    token = redeem(api, redis_url, SHOP)["access_token"]
    session = session_of(token)
    for _ in range(2):  # ending it again ends nothing: no event
        on_store(redis_url, lambda store: store.sessions.end(ANN["id"], session))
    assert api.get("/v1/me", headers={**SHOP, "Authorization": f"Bearer {token}"}
                   ).status_code == 401
    redeemed, ended = only_events(api, redis_url, 2)
    assert (redeemed["type"], ended["type"]) == ("code.redeemed", "session.ended")
    assert ended["data"] == {"user": ANN, "session": session}


def test_an_oidc_session_ended_emits_nothing(redis_url: str) -> None:
    """OpenID Connect clients have no event stream yet: their sessions end silently."""
    async def body(store: Store) -> int:
        await store.sessions.enter(ANN)
        register = store.sessions._register
        await register(keys=[keys.user(ANN["id"])], args=[
            "00112233aabbccdd", 2_000_000_000, 1_700_000_000, 3600, "", "",
            "AAAA|fam1|shop",  # a token family's field, of an OIDC client named like shop
        ])
        assert await store.sessions.end(ANN["id"], "00112233aabbccdd") is not None
        return int(await store.redis.xlen(keys.events(ANN["id"])))

    assert on_store(redis_url, body) == 0


def test_user_logged_out_once_per_client(api: TestClient, redis_url: str) -> None:
    for headers in (SHOP, SHOP, BLOG):
        redeem(api, redis_url, headers)
    assert on_store(redis_url, lambda store: store.revoke_user(ANN["id"])) == 3
    pulled(api, SHOP, 3)
    wait_until(lambda: stream_length(redis_url) == 0, timeout=15, what="delivery")
    shop = pulled(api, SHOP, 3)
    assert [e["type"] for e in shop] == [
        "code.redeemed", "code.redeemed", "user.logged_out"]
    assert shop[2]["data"] == {"user": ANN, "sessions": 2}
    blog = pulled(api, BLOG, 2)
    assert [e["type"] for e in blog] == ["code.redeemed", "user.logged_out"]
    assert blog[1]["data"] == {"user": ANN, "sessions": 1}


@pytest.mark.parametrize(("approve", "state"), [(True, "s-1"), (False, None)])
def test_approval_approved_and_denied(
    api: TestClient, redis_url: str, approve: bool, state: str | None
) -> None:
    on_store(redis_url, lambda store: store.sessions.enter(ANN))  # a known user
    approval = create_approval(api, state)

    async def tap(store: Store) -> None:
        approvals = Approvals(store.redis, settings(redis_url))
        key_hash = approvals.key_hash(approval)
        for _ in range(2):  # a redelivered tap decides nothing more
            await approvals.decide(ANN, key_hash, approve=approve)
        await approvals.decide(ANN, key_hash, approve=not approve)  # too late

    on_store(redis_url, tap)
    (event,) = only_events(api, redis_url, 1)
    assert event["type"] == ("approval.approved" if approve else "approval.denied")
    expected: dict[str, Any] = {"user": ANN, "id": approval}
    if state is not None:
        expected["state"] = state
    assert event["data"] == expected


def test_approval_expired(api: TestClient, redis_url: str) -> None:
    on_store(redis_url, lambda store: store.sessions.enter(ANN))
    approval = create_approval(api, "s-3")

    async def sweep(store: Store) -> None:
        approvals = Approvals(store.redis, settings(redis_url))
        deadline = asyncio.get_running_loop().time() + 15
        while not await approvals.expire_due():
            assert asyncio.get_running_loop().time() < deadline, "never expired"
            await asyncio.sleep(0.2)
        assert await approvals.expire_due() == []

    on_store(redis_url, sweep)
    (event,) = only_events(api, redis_url, 1)
    assert event["type"] == "approval.expired"
    # the seed the script put in is turned into the id shop knows
    assert event["data"] == {"user": ANN, "id": approval, "state": "s-3"}


@pytest.mark.parametrize(("approve", "state"), [(True, "s-2"), (False, None)])
def test_login_approved_and_denied(
    api: TestClient, redis_url: str, approve: bool, state: str | None
) -> None:
    _, payload = create_login(api, state)

    async def tap(logins: Logins) -> None:
        for _ in range(2):  # a redelivered tap decides nothing more
            await logins.decide(payload, ANN, approve)

    run_on_store(settings(redis_url), lambda store: tap(Logins(store)))
    (event,) = only_events(api, redis_url, 1)
    assert event["type"] == ("login.approved" if approve else "login.denied")
    assert event["data"] == ({"user": ANN, "state": state} if state else {"user": ANN})


async def decide_and_look(store: Store, approve: bool) -> None:
    """A login decision and its event commit together: the request's stream holds the
    event iff the decision counted, with the user stream's fields plus the user; a
    second decision (the same tap again, the other decision, another user) appends
    nothing; the wake names the user and the stream."""
    logins = Logins(store)
    created = await logins.create(SHOP_CLIENT, "s/5", "10.0.0.1")
    login_stream = keys.login_events(logins.id_hash(created.id))
    assert await store.redis.exists(login_stream) == 0
    decided = await logins.decide(created.payload, ANN, approve)
    assert decided is not None and decided.outcome == "decided"
    status = await store.redis.hget(keys.login(logins.id_hash(created.id)), "st")
    (entry_id, fields), = await store.redis.xrange(login_stream)
    assert status == ("approved" if approve else "denied")
    assert fields["t"] == f"login.{status}" and fields["c"] == "shop"
    assert fields["u"] == str(ANN["id"]) and int(fields["ts"]) > 0
    assert json.loads(fields["d"]) == {"user": ANN, "state": "s/5"}
    # kept a day past EVENT_RETRY_SECONDS, not the request's TTL (an API down longer
    # than a request lives still finds it to move)
    ttl = await store.redis.pttl(login_stream)
    assert store.settings.login_request_ttl_seconds * 1000 < ttl <= login_events_ttl_ms(
        store.settings)
    for user, again in ((ANN, approve), (ANN, not approve), ({**ANN, "id": 1002}, approve)):
        await logins.decide(created.payload, user, again)
    assert [e for e, _ in await store.redis.xrange(login_stream)] == [entry_id]
    assert await store.redis.xlen(keys.events(ANN["id"])) == 0  # not moved yet
    wakes = [fields for _, fields in await store.redis.xrange(keys.EVENT_WAKE)]
    assert wakes[0] == {"u": str(ANN["id"]), "l": login_stream}
    # noted in the user's slot with the wake (and its time), for whoever holds the user
    # to move first; the first decision's note and wake, then one of each later tap
    notes = [parse_note(n) for n in await store.redis.smembers(keys.event_logins(ANN["id"]))]
    assert {stream for stream, _ in notes} == {login_stream}
    assert all(0 < now_ms() - ms < 60_000 for _, ms in notes)
    # the move: into the user's stream with its stable id, once
    assert await move_login_events(store.redis, ANN["id"], login_stream) == 1
    assert await move_login_events(store.redis, ANN["id"], login_stream) == 0
    (_, moved), = await store.redis.xrange(keys.events(ANN["id"]))
    assert moved == {
        "t": fields["t"], "c": "shop", "d": fields["d"], "ts": fields["ts"],
        "eid": f"evt_{ANN['id']}_l{logins.id_hash(created.id)[:16]}_{entry_id}",
    }


@pytest.mark.parametrize("approve", [True, False])
def test_a_login_decision_and_its_event_commit_together(redis_url: str, approve: bool) -> None:
    on_store(redis_url, lambda store: decide_and_look(store, approve))


def test_a_login_decision_and_its_event_commit_together_on_a_cluster(
    cluster_env: dict[str, str]
) -> None:
    run_on_store(settings("", **cluster_env), lambda store: decide_and_look(store, True))


def test_an_authorization_pages_login_emits_nothing(redis_url: str) -> None:
    from tests.shared.test_logins import PAGE

    async def body(store: Store) -> int:
        logins = Logins(store)
        created = await logins.create_authorization(PAGE, "10.0.0.1")
        decided = await logins.decide(created.login.payload, ANN, True, created.match)
        assert decided is not None and decided.status == "approved"
        assert not await store.redis.exists(
            keys.login_events(logins.id_hash(created.login.id)))
        return int(await store.redis.xlen(keys.events(ANN["id"])))

    assert on_store(redis_url, body) == 0


# -- order, an open API, a Cluster ------------------------------------------------------------


def test_a_sessions_login_comes_before_its_end(api: TestClient, redis_url: str) -> None:
    login, payload = create_login(api, "s-4")
    run_on_store(settings(redis_url), lambda store: Logins(store).decide(payload, ANN, True))
    polled = api.get(f"/v1/login-requests/{login}", headers=SHOP).json()
    session = session_of(polled["access_token"])
    on_store(redis_url, lambda store: store.sessions.end(ANN["id"], session))
    token = redeem(api, redis_url, SHOP)["access_token"]
    on_store(redis_url, lambda store: store.sessions.end(ANN["id"], session_of(token)))
    events = only_events(api, redis_url, 4)
    assert [e["type"] for e in events] == [
        "login.approved", "session.ended", "code.redeemed", "session.ended"]
    assert events[1]["data"]["session"] == session
    assert events[2]["data"]["session"] == events[3]["data"]["session"] == session_of(token)


def test_an_open_api_emits_nothing(redis_url: str) -> None:
    """API_KEYS empty: no client to tell, no event and (a redeem) no wake either."""
    open_settings = api_settings(redis_url, **OPEN_ENV)

    async def body(store: Store) -> tuple[int, int]:
        redeemed = []
        for _ in range(4):
            issued = await store.issue_code(ANN)
            assert issued is not None
            redeemed.append(await store.redeem_code(issued.code, "10.0.0.1", None))
        wakes_after_redeems = int(await store.redis.xlen(keys.EVENT_WAKE))
        assert await store.revoke_token(redeemed[0].access_token, None)
        assert await store.sessions.end(ANN["id"], session_of(redeemed[1].access_token))
        logins = Logins(store)
        for approve in (True, False):
            created = await logins.create(None, "s", "10.0.0.1")
            assert await logins.decide(created.payload, ANN, approve) is not None
            assert not await store.redis.exists(keys.login_events(logins.id_hash(created.id)))
        approvals = Approvals(store.redis, open_settings)
        created_approval = await approvals.create(None, ANN["id"], "Pay", None, False)
        await approvals.decide(ANN, approvals.key_hash(created_approval.id), approve=True)
        assert await store.revoke_user(ANN["id"]) == 2
        return wakes_after_redeems, int(await store.redis.xlen(keys.events(ANN["id"])))

    assert run_on_store(open_settings, body) == (0, 0)


def test_the_emitting_scripts_run_on_a_cluster(cluster_env: dict[str, str]) -> None:
    """Each changed script writes the user's hash (or approval) and stream in one slot on
    a Cluster that refuses cross-slot scripts; the wakes go to their own node."""
    cluster = settings("", **cluster_env)

    async def body(store: Store) -> list[str]:
        tokens = []
        for _ in range(3):
            issued = await store.issue_code(ANN)
            assert issued is not None
            tokens.append((await store.redeem_code(issued.code, "10.0.0.1", SHOP_CLIENT))
                          .access_token)
        assert await store.revoke_token(tokens[0], SHOP_CLIENT)
        assert await store.sessions.end(ANN["id"], session_of(tokens[1]))
        logins = Logins(store)
        created = await logins.create(SHOP_CLIENT, "s", "10.0.0.1")
        await logins.decide(created.payload, ANN, True)
        # the decision's event is in the request's slot; the deliverer moves it
        login_stream = keys.login_events(logins.id_hash(created.id))
        assert await store.redis.xlen(login_stream) == 1
        assert await move_login_events(store.redis, ANN["id"], login_stream) == 1
        approvals = Approvals(store.redis, cluster)
        for approve in (True, False):
            made = await approvals.create(SHOP_CLIENT, ANN["id"], "Pay", None, False)
            await approvals.decide(ANN, approvals.key_hash(made.id), approve=approve)
        await approvals.create(SHOP_CLIENT, ANN["id"], "Pay", None, False)
        deadline = asyncio.get_running_loop().time() + 15
        while not await approvals.expire_due():
            assert asyncio.get_running_loop().time() < deadline, "never expired"
            await asyncio.sleep(0.2)
        assert await store.revoke_user(ANN["id"]) == 1
        assert await store.redis.xlen(keys.EVENT_WAKE) >= 8
        entries = await store.redis.xrange(keys.events(ANN["id"]))
        assert all(fields["c"] == "shop" for _, fields in entries)
        assert json.loads(entries[-1][1]["d"]) == {"user": ANN, "sessions": 1}
        return [fields["t"] for _, fields in entries]

    assert run_on_store(cluster, body) == [
        "code.redeemed", "code.redeemed", "code.redeemed", "token.revoked", "session.ended",
        "login.approved", "approval.approved", "approval.denied", "approval.expired",
        "user.logged_out",
    ]
    assert set(EVENT_TYPES) == {
        "code.redeemed", "token.revoked", "session.ended", "login.approved", "login.denied",
        "approval.approved", "approval.denied", "approval.expired", "user.logged_out",
    }


def test_a_long_client_name_cut_in_the_field_is_named_in_full(redis_url: str) -> None:
    """A session's field keeps a cut name (it stays within 64 bytes); session.ended and
    user.logged_out name the configured client all the same."""
    name = "The Long-Named Online Shop of Fine Things " + "x" * 30
    key = "long-key-" + "l" * 24
    long_settings = settings(redis_url, API_KEYS=f"{name}:{key},shop:{SHOP_KEY}")
    client = ApiClient(name=name, key=Secret(key))

    async def body(store: Store) -> list[tuple[str, str]]:
        tokens = []
        for _ in range(2):
            issued = await store.issue_code(ANN)
            assert issued is not None
            tokens.append((await store.redeem_code(issued.code, "10.0.0.1", client))
                          .access_token)
        field = await store.redis.hget(keys.user(ANN["id"]), session_of(tokens[0]))
        assert name not in str(field)  # cut
        assert await store.sessions.end(ANN["id"], session_of(tokens[0]))
        assert await store.revoke_user(ANN["id"]) == 1
        entries = await store.redis.xrange(keys.events(ANN["id"]))
        return [(f["t"], f["c"]) for _, f in entries]

    assert run_on_store(long_settings, body) == [
        ("code.redeemed", name), ("code.redeemed", name), ("session.ended", name),
        ("user.logged_out", name),
    ]
