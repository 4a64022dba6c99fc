"""GET /v1/events?after=<id>&wait=<0-30>: a client's events, for clients without a
public URL (pull instead of webhooks).

The caller sees its own client's events only, oldest first, from its pull stream
(`keys.event_client`, filled by `api_worker.user_delivery`). `after` is the `id` of the last
event it has (none: from the oldest kept); `next` is what to pass next time. A pull
stream keeps its client's last EVENT_LOG_MAXLEN events: when events after `after` are
no longer kept (the client fell that far behind), the answer says `"gap": true` and
starts from the oldest kept, so a client knows to reconcile what it missed rather
than miss it silently (`gap` is false otherwise, and when `after` is not given; it is
worked out after the read, so a trim in between may make it true falsely: a known
limit, README). Each
event's `webhook_id` is its stable id (the pull stream entry's `w`, its webhook's
`webhook-id`): at least once, an event may be appended twice, two `id`s with one
`webhook_id`, so that is what a client deduplicates on. With
`wait` the request is held until an event arrives or `wait` seconds pass (woken
through the same pub/sub channel as login decisions, `api_worker.waiters`).

A pull stream holds each event's data as written (an approval's `approval_seed`, not
its id, so a copy of Redis gives no approval id) and the user's id (`u`): the data is
made what the client sees here (`shared.events.client_data`, with AUTH_SECRET), as
its webhook's is. An entry written before `u` was kept holds its data as sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import require_client
from api_worker.codes import NO_STORE
from api_worker.errors import InvalidRequest
from api_worker.waiters import wait_param
from shared import keys
from shared.codes import now_ms
from shared.events import client_data, client_hash, iso_time
from shared.settings import Settings
from shared.store import unavailable_on_error

# events one answer holds at most
PAGE = 100
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_ID_PART = 2**64 - 1
_PARAMETERS = frozenset({"after", "wait"})
# how far Redis's clock (which names the ids) may run ahead of this process's
_CLOCK_SLACK_MS = 60_000


def _after(request: Request) -> str | None:
    raw = request.query_params.get("after")
    if raw is None:
        return None
    found = _STREAM_ID.fullmatch(raw)
    # an id names its event's time (ms): one from the future names no event, and no
    # event would ever come after it (a poll would wait for nothing)
    if found is None or int(found[1]) > now_ms() + _CLOCK_SLACK_MS \
            or int(found[2]) > _MAX_ID_PART:
        raise InvalidRequest("after must be the id of an event this API returned.")
    return raw




def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _gap(redis: Any, stream: str, after: str) -> bool:
    """Whether events after `after` were trimmed off the pull stream (it holds some):
    the newest trimmed is its max-deleted-entry-id (`event_pull.lua`)."""
    with unavailable_on_error():
        info: Any = await redis.xinfo_stream(stream)
    deleted = info.get("max-deleted-entry-id")
    if deleted is None:  # a server before Redis 7: the oldest kept, once any was trimmed
        first = info.get("first-entry")
        return bool(first) and _id(str(first[0])) > _id(after) \
            and int(info.get("length", 0)) >= keys.EVENT_LOG_MAXLEN
    return _id(str(deleted)) > _id(after)


def _event(settings: Settings, entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    type_, data, user = fields.get("t", ""), fields.get("d", "{}"), fields.get("u", "")
    if user.isdigit():  # its data as written: an approval's seed made its id
        data = client_data(settings, int(user), type_, data)
    return {
        "id": entry_id,
        "webhook_id": fields.get("w", ""),
        "type": type_,
        "timestamp": iso_time(int(fields.get("ts", "0"))),
        "data": json.loads(data),
    }


async def list_events(request: Request) -> Response:
    client = await require_client(request)
    unknown = set(request.query_params) - _PARAMETERS
    if unknown:  # a misspelt `after` would start from the oldest event again
        raise InvalidRequest("Unknown query parameter(s); the query is after=<id>&wait=<s>.")
    after, wait = _after(request), wait_param(request)
    settings = context.settings(request)
    chash = client_hash(settings.auth_secret, client.name if client is not None else "")
    redis = context.store(request).redis
    stream = keys.event_client(chash)

    async def read() -> list[Any]:
        with unavailable_on_error():
            found: Any = await redis.xrange(stream, f"({after or '0-0'}", "+", count=PAGE)
        return list(found)

    entries = await context.waiters(request).hold(
        "evc:" + chash, read, lambda found: not found, wait
    )
    events = [_event(settings, str(entry_id), fields) for entry_id, fields in entries]
    # trimmed events leave kept ones after them: a gap comes with events
    gap = after is not None and bool(events) and await _gap(redis, stream, after)
    last = events[-1]["id"] if events else (after or "0-0")
    return JSONResponse({"events": events, "next": last, "gap": gap}, headers=NO_STORE)


routes = [Route("/v1/events", list_events, methods=["GET"])]
