"""Events: what happened to a user, written in the same atomic step as the change.

The emission contract (every flow that emits follows it):

1. The Lua script that makes the change appends the event to the user's own stream,
   `keys.events(user id)` (tagged like `keys.user`, so it shares that user's Cluster
   slot), passed as one of its KEYS; four ARGV carry what `event_args()` gives:

       redis.call("XADD", KEYS[k], "*",
         "t", ARGV[i], "c", ARGV[i + 1], "d", ARGV[i + 2], "ts", ARGV[i + 3])

   (type, the client it concerns by its API_KEYS name or "", the data as JSON with at
   least `user`, the public user record, and `id` of the request it concerns where one
   exists, the time in ms). Change and event are then one step in any deployment.
   No MAXLEN: the stream is never trimmed; an entry leaves it only once its client has
   it (delivered, or dead-lettered after its retries), and the key goes once it is empty.
2. In the same pipeline, BEFORE that script, `queue_wake(pipe, user id)` queues an
   entry on the global wake stream that the API processes' deliverers read (never
   trimmed either: a wake is deleted once handled). Wake first, so that a process
   that dies between the two writes leaves a wake with nothing behind it (harmless:
   no change happened either), never an event without its wake. A pipeline is one
   socket write on a single server or Sentinel, in order. A Cluster sends it to two
   nodes (the wake stream's and the user's slot's), one write each, in the order of
   each node's first command: the wake's node first while its connection is open.
3. So a deliverer may read a wake before its script has run (on a Cluster; on a
   single server, rarely, when a pipeline's bytes arrive in two reads). A wake younger
   than `grace_ms` (2 x REDIS_TIMEOUT + 1 s, by its entry id's ms: a pipeline's writes
   all land within its deadline) is noted in the user's slot with its time (below),
   before the wake is acknowledged, whichever process holds the user; every pass keeps
   the note until the grace ends and leaves the user due in `keys.EVENT_DUE` then
   (never later than a score already there). The user is looked at again once the
   script has surely run.

From Python, around the flow's own script:

    args = event_args("session.ended", client_name, {"user": user, "id": request_id})
    async with redis.pipeline(transaction=False) as pipe:
        queue_wake(pipe, uid)
        await script(keys=[..., keys.events(uid)], args=[..., *args], client=pipe)
        _, answer = await pipe.execute()

One flow departs from (1): a deep-link login's decision (`login_decide.lua`) runs on the
login request's key, in the request's own slot (the first decision wins there, and two
users may tap one link), so it appends `login.approved`/`login.denied` to the request's
own stream, `keys.login_events(id hash)`, in the same script (the same fields, plus `u`,
the user's id). Its wake names that stream (`queue_wake(pipe, user id, login_stream)`),
which also notes it in the user's slot (SADD to `keys.event_logins(user id)` the member
`note_member(stream, ms)`: the stream and when the note was made), both before the
decision's script in the same pipeline. Whoever holds the user's delivery lock drains
every noted login stream before it delivers any of the user's events, again whenever
one is noted while it delivers, and before it lets the user go (so a login noted for a
holder with nothing else to send goes out too): a login event is moved ahead of the
session it led to whichever process holds the wake. A note whose stream is gone or
empty (or holds none of the user's entries) is dropped only once it is older than the
grace (a note without a time, from before notes had one, is old); a younger one is kept
and its user due when its grace ends, as its decision may not have run yet. A bot
killed after the note and wake and before its decision leaves a note dropped after the
grace, nothing else (the decision never happened). A wake that finds its user held
notes its own time the same way (its login stream's name, or "" for a wake of the
user's own stream), so the holder looks again after the grace. The login stream is
kept `login_events_ttl_ms`, a day past EVENT_RETRY_SECONDS, not the request's short TTL
(an API down, or a wake backlog, longer than a request lives loses no login event);
emptied by the move, its key is deleted. The move (`move_login_events`) appends the
entry to the user's stream with `eid`, the event's stable id, then XDELs it here, then
the notes naming it go. Two slots, two steps: a process killed between them leaves the
entry (and its note) to be moved again, a second copy with the same `eid`, so the
receiver sees the same `webhook-id` twice (at least once, as everywhere). Order holds:
the first step, one script in the user's slot, also takes the user's events from the
login's millisecond on (appended while it waited to be moved) out and appends them
again after it, each keeping its stable id (`eid`). The entry ids of two slots are
compared: on a Cluster, within the nodes' clock skew.

What remains (README "Events and webhooks", known limits): the wake's and the note's
ages are read against the API process's clock, so the grace holds within the clock
skew between the API hosts, the bots and Redis; a Cluster pipeline whose connection to
the wake's node is being (re)established as it is sent may write the script's node
first, and a process killed in that moment leaves an event without its wake (delivered
with that user's next wake or due visit); and a script that lands later than the grace
after its wake (its node stalled past the caller's deadline, which got `unavailable`,
and its bytes run when the node resumes) is delivered the same way.

A script whose change may not happen (a second decision, a token already revoked)
appends only when it happens; the wake may go regardless (one with nothing to deliver
is acknowledged and dropped, its user looked at once more after the grace when young).
An event that concerns several clients (a /logout ending sessions of two) is one XADD
per client, each with its own `c`; one wake covers them all. Order is kept per (user,
client): a client's events go out in the order they were appended, and one client's
failing endpoint holds back only that client's later events. `data` is JSON the
receivers see as it is: never a code, a token or anything secret.

What a script cannot compute goes in `data` as what it can, and what the client sees is
made of it as it is handed over (`client_data`, with AUTH_SECRET): an `approval.*` event
carries `"approval_seed"`, the seed in the approval's record, in place of `"id"`, which
the client sees. Only a webhook's body and GET /v1/events's answer hold the id: the
user's stream, the client's pull stream and the dead letters keep the seed, so a copy
of Redis gives no approval id.

`Events.emit(user id, type, client, data)` does both for an event with no other change
(`event_emit.lua`, the snippet above on its own). Delivery and the pull API are the API
worker's (`api_worker.delivery`, `api_worker.events`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared import keys
from shared.codes import now_ms
from shared.hashing import digest
from shared.redis import scripts, unavailable_on_error
from shared.settings import Secret, Settings

# how much longer than EVENT_RETRY_SECONDS a login request's event stream is kept (s)
LOGIN_EVENTS_MARGIN_SECONDS = 86400

# every event type a client may be told of (SPEC "Approvals, events and sessions")
EVENT_TYPES = (
    "code.redeemed",
    "login.approved",
    "login.denied",
    "approval.approved",
    "approval.denied",
    "approval.expired",
    "token.revoked",
    "session.ended",
    "user.logged_out",
)


def event_args(
    type_: str, client: str, data: Mapping[str, Any], ms: int | None = None
) -> list[str]:
    """The four ARGV of the emission snippet: type, client, data JSON, time in ms."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return [type_, client, text, str(now_ms() if ms is None else ms)]


def queue_wake(pipe: Pipeline, user_id: int, login_stream: str | None = None) -> None:
    """Queue the wake of the event's deliverer BEFORE the script that appends the event
    (in the same pipeline): killed between the two, a process leaves a wake with nothing
    behind it, never an event without its wake. Naming `login_stream`
    (`keys.login_events`) when the event goes there (`l`), and then noting that stream,
    with the time of the note, in the user's slot (`keys.event_logins`, member
    `note_member`), for whoever holds the user to move it before the user's other
    events. The wake is the pipeline's first command: a Cluster pipeline writes to its
    nodes in the order of their first commands, so the wake's node is written first
    (with the script, when they share a node). Never trimmed."""
    fields: dict[Any, Any] = {"u": str(user_id)}
    if login_stream is not None:
        fields["l"] = login_stream
    pipe.xadd(keys.EVENT_WAKE, fields)
    if login_stream is not None:
        pipe.sadd(keys.event_logins(user_id), note_member(login_stream, now_ms()))


def grace_ms(settings: Settings) -> int:
    """How long after its wake (or note) an emitting pipeline's script may still land
    (ms): 2 x REDIS_TIMEOUT + 1 s (a pipeline's writes all land within its deadline). A
    wake or note younger than this leaves its user looked at again when it ends."""
    return int((2 * settings.redis_timeout + 1) * 1000)


def note_member(stream: str, ms: int) -> str:
    """A note in `keys.event_logins`: a login stream (or "": only that something may
    still land in the user's slot) and when the note was made (ms)."""
    return f"{stream}|{ms}"


def parse_note(member: str) -> tuple[str, int]:
    """A note's (stream, ms); a note without a time (made before notes had one) is old,
    0."""
    stream, bar, ms = member.rpartition("|")
    if bar and ms.isdigit():
        return stream, int(ms)
    return member, 0


def entry_ms(entry_id: str) -> int:
    """The ms of a stream entry's id (when Redis appended it)."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


def event_id(user_id: int, entry_id: str) -> str:
    """The event's stable id (its `webhook-id`): the user and the user-stream entry."""
    return f"evt_{user_id}_{entry_id}"


def login_event_id(user_id: int, login_stream: str, entry_id: str) -> str:
    """A login event's stable id: the user, the request (a prefix of its id hash) and
    the entry in the request's stream; the same however often it is moved."""
    id_hash = login_stream.removeprefix(keys.LOGIN_EVENTS).strip("{}")
    return f"evt_{user_id}_l{id_hash[:16]}_{entry_id}"


def login_events_ttl_ms(settings: Settings) -> int:
    """How long a login request's event stream is kept from its decision (ms): a day past
    EVENT_RETRY_SECONDS, whatever the request's own TTL (the stream holds one entry, and
    its key is deleted once moved)."""
    return (settings.event_retry_seconds + LOGIN_EVENTS_MARGIN_SECONDS) * 1000


def is_login_events(name: str) -> bool:
    """Whether a wake's `l` names a login request's event stream."""
    return name.startswith(keys.LOGIN_EVENTS + "{") and name.endswith("}")




async def copy_login_event(
    redis: Redis, user_id: int, login_stream: str, entry_id: str, fields: Mapping[str, str]
) -> str:
    """The move's first step: the login stream's entry appended to the user's stream
    with `eid`, its stable id, the user's events newer than it after it; the new id."""
    moved = await scripts(redis).get("event_move.lua")(keys=[keys.events(user_id)], args=[
        entry_id, fields.get("t", ""), fields.get("c", ""), fields.get("d", "{}"),
        fields.get("ts", "0"), login_event_id(user_id, login_stream, entry_id), user_id,
    ])
    return str(moved)


async def move_login_events(redis: Redis, user_id: int, login_stream: str) -> int:
    """Move `user_id`'s entries of a login request's stream into the user's stream, in
    order (the caller holds the user's delivery lock), each before whatever the user's
    stream got after it; how many. Two slots, two steps each: killed between them, an
    entry is moved again later, a second copy with the same `eid`. A login stream left
    empty is deleted (only its decision, once, ever appends to it)."""
    moved = 0
    with unavailable_on_error():
        entries: Any = await redis.xrange(login_stream, "-", "+")
        for entry_id, fields in entries:
            if fields.get("u") != str(user_id):
                continue  # not this user's (no decision but the first appends)
            await copy_login_event(redis, user_id, login_stream, str(entry_id), fields)
            await redis.xdel(login_stream, entry_id)
            moved += 1
        if moved and len(entries) == moved:
            await redis.delete(login_stream)
    return moved


def client_hash(secret: Secret, client: str) -> str:
    """What a client's pull stream (`keys.event_client`) is named by."""
    return digest(secret, "event-client", client)


def iso_time(ms: int) -> str:
    """An event's `timestamp`: ISO 8601 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Events:
    """Emitting events on one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def emit(
        self, user_id: int, type_: str, client: str, data: Mapping[str, Any],
    ) -> str:
        """Append one event for `user_id` and wake the deliverers; the entry's id."""
        script = scripts(self.redis).get("event_emit.lua")
        args = event_args(type_, client, data)
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_wake(pipe, user_id)  # the wake first: never an event without it
                await script(keys=[keys.events(user_id)], args=args, client=pipe)
                _, entry = await pipe.execute()
        return str(entry)


def client_data(settings: Settings, user_id: int, type_: str, data_json: str) -> str:
    """An event's data as its client sees it: an approval's `approval_seed` turned into
    the approval's `id` (a keyed hash no script can make)."""
    if not type_.startswith("approval.") or '"approval_seed"' not in data_json:
        return data_json
    from shared.approvals import approval_id

    data = json.loads(data_json)
    seed = data.pop("approval_seed", None)
    if isinstance(seed, str):
        data["id"] = approval_id(settings, user_id, seed)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def webhook_body(type_: str, ms: int, data_json: str) -> str:
    """A webhook's body, `{"type", "timestamp", "data"}`, as sent and signed."""
    return (
        '{"type":' + json.dumps(type_) + ',"timestamp":' + json.dumps(iso_time(ms))
        + ',"data":' + data_json + "}"
    )


def parse_fields(fields: Mapping[str, str]) -> tuple[str, str, str, int]:
    """An entry's (type, client, data JSON, ms)."""
    return fields.get("t", ""), fields.get("c", ""), fields.get("d", "{}"), int(
        fields.get("ts", "0")
    )

