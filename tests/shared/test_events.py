"""shared.events and EVENT_WEBHOOKS: the emission contract on a real Redis and a real
Cluster, and the settings' checks (one line naming the variable, never a secret)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from shared import keys
from shared.codes import now_ms
from shared.events import (
    EVENT_TYPES,
    Events,
    event_args,
    iso_time,
    note_member,
    parse_note,
    queue_wake,
)
from shared.redis import scripts
from shared.settings import SettingsError
from shared.store import Store
from tests.fixtures.store import run_on_store
from tests.fixtures.webhooks import new_secret
from tests.shared.test_store import ANN, make_settings

URL = "https://a.example/h"
KEYS = "shop:" + "s" * 32 + ",blog:" + "b" * 32


def _hooks(*entries: dict[str, object]) -> dict[str, str]:
    return {"API_KEYS": KEYS, "EVENT_WEBHOOKS": json.dumps(list(entries))}


def test_emit_appends_to_the_users_stream_and_wakes(redis_url: str) -> None:
    async def body(store: Store) -> None:
        events = Events(store.redis)
        first = await events.emit(1001, "login.approved", "shop", {"user": ANN, "id": "r1"})
        await events.emit(1001, "session.ended", "shop", {"user": ANN})
        entries = await store.redis.xrange(keys.events(1001))
        assert entries[0][0] == first
        assert [e[1]["t"] for e in entries] == ["login.approved", "session.ended"]
        fields = entries[0][1]
        assert fields["c"] == "shop" and json.loads(fields["d"]) == {"user": ANN, "id": "r1"}
        assert int(fields["ts"]) > 1_700_000_000_000
        wakes = await store.redis.xrange(keys.EVENT_WAKE)
        assert [w[1] for w in wakes] == [{"u": "1001"}, {"u": "1001"}]

    run_on_store(make_settings(redis_url), body)


def test_the_snippet_in_another_script_commits_with_the_change(redis_url: str) -> None:
    """The convention as a flow's script uses it: change and event in one script, the
    wake queued right before it in the same pipeline."""
    change = (
        'redis.call("HSET", KEYS[1], "g", 1)\n'
        'return redis.call("XADD", KEYS[2], "*",\n'
        '  "t", ARGV[1], "c", ARGV[2], "d", ARGV[3], "ts", ARGV[4])\n'
    )

    async def body(store: Store) -> None:
        script = store.redis.register_script(change)
        async with store.redis.pipeline(transaction=False) as pipe:
            queue_wake(pipe, 1001)
            await script(
                keys=[keys.user(1001), keys.events(1001)],
                args=event_args("user.logged_out", "", {"user": ANN}, 1_750_000_000_000),
                client=pipe,
            )
            await pipe.execute()
        assert await store.redis.hget(keys.user(1001), "g") == "1"
        (_, fields), = await store.redis.xrange(keys.events(1001))
        assert fields["t"] == "user.logged_out" and fields["ts"] == "1750000000000"
        assert await store.redis.xlen(keys.EVENT_WAKE) == 1

    run_on_store(make_settings(redis_url), body)


def test_emission_runs_on_a_cluster(cluster_env: dict[str, str]) -> None:
    """The user's stream shares the user hash's slot: one script writes both on a
    Cluster that refuses cross-slot scripts; the wake lives on its own node."""
    async def body(store: Store) -> None:
        events = Events(store.redis)
        for n in range(5):
            await events.emit(1001 + n, "code.redeemed", "shop", {"user": {**ANN, "id": 1001 + n}})
        for n in range(5):
            assert await store.redis.xlen(keys.events(1001 + n)) == 1
        assert await store.redis.xlen(keys.EVENT_WAKE) == 5
        # the same slot as the user's hash: a script may touch both
        both = store.redis.register_script(
            'redis.call("HSET", KEYS[1], "x", 1) return redis.call("XLEN", KEYS[2])'
        )
        assert await both(keys=[keys.user(1001), keys.events(1001)]) == 1
        assert await scripts(store.redis).get("event_emit.lua")(
            keys=[keys.events(1001)], args=event_args("token.revoked", "shop", {"user": ANN})
        )

    run_on_store(make_settings("", **cluster_env), body)


def test_a_users_stream_is_never_trimmed(redis_url: str) -> None:
    """1,200 undelivered events of one user (past the 1,000 the stream used to be cut to):
    every one kept, the oldest first; one wake each."""
    async def body(store: Store) -> tuple[int, bool, int]:
        events = Events(store.redis)
        first = await events.emit(1001, "code.redeemed", "shop", {"user": ANN, "n": 0})
        for n in range(1, 1200):
            await events.emit(1001, "code.redeemed", "shop", {"user": ANN, "n": n})
        (oldest, _), = await store.redis.xrange(keys.events(1001), count=1)
        return (int(await store.redis.xlen(keys.events(1001))), str(oldest) == first,
                int(await store.redis.xlen(keys.EVENT_WAKE)))

    assert run_on_store(make_settings(redis_url), body) == (1200, True, 1200)


def test_no_script_trims_an_event_stream() -> None:
    """Every XADD of the emitting scripts (and the move) appends without MAXLEN or MINID:
    an undelivered event never leaves silently."""
    lua = Path(__file__).resolve().parents[2] / "shared" / "lua"
    xadds = [
        (path.name, line) for path in sorted(lua.glob("*.lua"))
        for line in path.read_text().splitlines() if '"XADD"' in line
    ]
    # the pull stream's (event_pull.lua) keeps its last EVENT_LOG_MAXLEN, saying `gap`
    assert len(xadds) >= 9
    trimming = [(name, line) for name, line in xadds if re.search(r"MAXLEN|MINID", line)]
    assert trimming == []


# where trimming is meant: a client's pull stream (its last EVENT_LOG_MAXLEN, `gap`)
TRIMMING_SCRIPTS = {"event_pull.lua"}
# streams Python may append to with a cap: dead letters and the approvals' send queue
CAPPED_STREAMS = {"keys.EVENT_DEAD", "keys.APPROVAL_QUEUE"}


def test_no_script_or_call_trims_an_event_stream_anywhere() -> None:
    """No script that appends events trims anything (XTRIM, or MAXLEN/MINID on any line,
    not only its XADD's), but the pull stream's; and no Python call trims a user's or a
    login request's event stream (xadd with maxlen/minid, or xtrim) but on the streams
    meant to be capped."""
    root = Path(__file__).resolve().parents[2]
    emitting = [path for path in sorted((root / "shared" / "lua").glob("*.lua"))
                if '"XADD"' in path.read_text()]
    assert {"event_emit.lua", "event_move.lua", "login_decide.lua"} <= {
        path.name for path in emitting}
    trimming = [
        (path.name, line) for path in emitting if path.name not in TRIMMING_SCRIPTS
        for line in path.read_text().splitlines()
        if re.search(r"XTRIM|MAXLEN|MINID", line.split("--")[0], re.IGNORECASE)
    ]
    assert trimming == []
    capped: list[tuple[str, str]] = []
    for path in sorted(root.glob("*_worker/**/*.py")) + sorted(root.glob("shared/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr.lower()
            trims = name == "xtrim" or (name == "xadd" and any(
                word.arg in ("maxlen", "minid") for word in node.keywords))
            if trims:
                stream = ast.unparse(node.args[0]) if node.args else "?"
                if stream not in CAPPED_STREAMS:
                    capped.append((path.name, stream))
    assert capped == []


def test_every_emitting_pipeline_queues_its_wake_before_its_script() -> None:
    """In every pipeline that wakes a deliverer, `queue_wake` comes before each script
    run on that pipeline (`client=pipe`): a process killed between two nodes' writes
    leaves a wake with nothing behind it, never an event without its wake."""
    root = Path(__file__).resolve().parents[2]
    found, late = [], []
    for path in sorted(root.glob("*_worker/**/*.py")) + sorted(root.glob("shared/**/*.py")):
        for block in ast.walk(ast.parse(path.read_text())):
            if not isinstance(block, ast.AsyncWith) or "pipeline(" not in ast.unparse(
                    block.items[0].context_expr):
                continue
            calls = [node for node in ast.walk(block) if isinstance(node, ast.Call)]
            wakes = [c.lineno for c in calls if ast.unparse(c.func) == "queue_wake"]
            if not wakes:
                continue
            found.append(path.name)
            scripts_run = [c.lineno for c in calls if any(
                word.arg == "client" for word in c.keywords)]
            late += [(path.name, line) for line in scripts_run if line < min(wakes)]
    assert {"codes.py", "sessions.py", "approval_decisions.py", "approval_due.py",
            "logins.py", "events.py"} <= set(found)
    assert found.count("sessions.py") == 3
    assert late == []


def test_wakes_are_never_trimmed(redis_url: str) -> None:
    """10,500 wakes not yet read (past the 10,000 the wake stream used to be cut to): the
    oldest is still there."""
    async def body(store: Store) -> tuple[int, dict[str, str]]:
        for batch in range(21):
            async with store.redis.pipeline(transaction=False) as pipe:
                for n in range(500):
                    queue_wake(pipe, 1001 + batch * 500 + n)
                await pipe.execute()
        (_, first), = await store.redis.xrange(keys.EVENT_WAKE, count=1)
        return int(await store.redis.xlen(keys.EVENT_WAKE)), first

    assert run_on_store(make_settings(redis_url), body) == (10_500, {"u": "1001"})


def test_a_login_wake_notes_its_stream_in_the_users_slot(redis_url: str) -> None:
    """A wake naming a login stream notes it in the user's slot, in the same pipeline,
    with the time of the note, for whoever holds the user to move it first."""
    login_stream = keys.login_events("ab" * 16)

    async def body(store: Store) -> tuple[int, set[str], list[dict[str, str]]]:
        before = now_ms()
        async with store.redis.pipeline(transaction=False) as pipe:
            queue_wake(pipe, 1001, login_stream)
            await pipe.execute()
        wakes = [fields for _, fields in await store.redis.xrange(keys.EVENT_WAKE)]
        return before, set(await store.redis.smembers(keys.event_logins(1001))), wakes

    before, noted, wakes = run_on_store(make_settings(redis_url), body)
    (note,) = noted
    stream, ms = parse_note(note)
    assert stream == login_stream and before <= ms <= now_ms()
    assert note == note_member(login_stream, ms)
    assert wakes == [{"u": "1001", "l": login_stream}]
    assert keys.event_logins(1001).endswith(keys.events(1001).removeprefix(keys.EVENTS))


def test_event_args_refuse_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event_args("login.maybe", "shop", {})
    assert len(EVENT_TYPES) == 9


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(1_750_000_000_042) == "2025-06-15T15:06:40.042Z"


def test_event_webhooks_are_read_and_rotation_merges() -> None:
    old, new = new_secret(), new_secret()
    settings = make_settings("redis://127.0.0.1/0", **_hooks(
        {"client": "shop", "url": "https://shop.example/hook", "secret": old},
        {"client": "shop", "url": "https://shop.example/hook", "secret": new},
        {"client": "blog", "url": "http://127.0.0.1:9/h", "secret": new,
         "events": ["login.approved"]},
    ))
    shop, blog = settings.event_webhooks
    assert [s.reveal() for s in shop.secrets] == [old, new] and shop.events is None
    assert blog.wants("login.approved") and not blog.wants("session.ended")
    assert old not in repr(settings) and new not in repr(settings)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"client": "nobody", "url": "https://a.example/h"}, "API_KEYS client"),
        ({"client": "shop", "url": "http://a.example/h"}, "https://"),
        ({"client": "shop", "url": "ftp://a.example/h"}, "https://"),
        ({"client": "shop", "url": "https://u:p@a.example/h"}, "no user name"),
        ({"client": "shop", "url": URL, "secret": "whsec_!!not~base64!!"}, "whsec_"),
        ({"client": "shop", "url": URL, "secret": "plain-text-not-whsec"}, "whsec_"),
        ({"client": "shop", "url": "https://a.example/h", "events": ["x.y"]}, "unknown event"),
        ({"client": "shop", "url": "https://a.example/h", "events": []}, "non-empty"),
        ({"client": "shop", "url": "https://a.example/h", "other": 1}, "unknown field"),
    ],
)
def test_bad_event_webhooks_name_the_variable(entry: dict[str, object], says: str) -> None:
    entry = {"secret": new_secret(), **entry}
    with pytest.raises(SettingsError) as caught:
        make_settings("redis://127.0.0.1/0", **_hooks(entry))
    assert caught.value.variable == "EVENT_WEBHOOKS" and says in str(caught.value)
    assert str(entry["secret"])[6:] not in str(caught.value)


def test_more_than_two_secrets_per_endpoint_are_refused() -> None:
    secrets = [new_secret() for _ in range(3)]
    with pytest.raises(SettingsError, match="at most two secrets") as caught:
        make_settings("redis://127.0.0.1/0", **_hooks(*(
            {"client": "shop", "url": "https://a.example/h", "secret": s} for s in secrets
        )))
    assert not any(s[6:] in str(caught.value) for s in secrets)


@pytest.mark.parametrize("raw", ["{", "{}", "[1]"])
def test_event_webhooks_must_be_a_json_array_of_objects(raw: str) -> None:
    with pytest.raises(SettingsError, match="EVENT_WEBHOOKS"):
        make_settings("redis://127.0.0.1/0", API_KEYS=KEYS, EVENT_WEBHOOKS=raw)


def test_retry_settings() -> None:
    settings = make_settings(
        "redis://127.0.0.1/0", EVENT_RETRY_SCHEDULE="1,2.5", EVENT_RETRY_SECONDS="60"
    )
    assert settings.event_retry_schedule == (1.0, 2.5) and settings.event_retry_seconds == 60
    default = make_settings("redis://127.0.0.1/0")
    assert default.event_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert default.event_retry_seconds == 86400 and default.event_timeout_seconds == 10
    for name, raw in (("EVENT_RETRY_SCHEDULE", "1,x"), ("EVENT_RETRY_SCHEDULE", "0"),
                      ("EVENT_RETRY_SECONDS", "0"), ("EVENT_TIMEOUT_SECONDS", "nan")):
        with pytest.raises(SettingsError, match=name):
            make_settings("redis://127.0.0.1/0", **{name: raw})
