"""What a request looks like in logs and metric labels: never its variable parts.

- `route_label(scope)`: the matched route's template (`/v1/login-requests/{id}`), the
  label of metrics and of error lines, so labels stay few and no identifier shows.
- `RedactingFormatter`: the one formatter of every API process's log. In uvicorn's
  access log a query string keeps only the parameters the API defines whose values
  are no secret (`wait=30`); anything else becomes `<redacted>` (a client may put a
  token there: `GET /v1/me?access_token=...` is logged `GET /v1/me?<redacted>`). In
  every line, tracebacks included, a login request id becomes `{id}`
  (`/v1/login-requests/{id}`, as the route's template): the id is what its client
  polls with for an access token, so it must not sit in log files; an approval's id
  (`/v1/approvals/{id}`) likewise.

What a request did for whom (`code redeemed for user 7`) goes on that request's access
line (`note_on_access_line`), not on a line of its own:
`"POST /v1/codes/redeem HTTP/1.1" 200 - code redeemed for user 7` (a line of its own
only when no access line was written: the client had left).

Every request writes a line, so logging is made cheap where that changes nothing: the
timestamp's text is made once a second, a line is searched for ids only when it can hold
one, records skip what no line of ours shows and stdout is flushed once per event-loop
turn instead of once a line (`shared.log_output`).
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import Scope

UNMATCHED = "unmatched"
ACCESS_LOGGER = "uvicorn.access"
REDACTED = "<redacted>"
# the paths whose next segment is an id its client reads a result with
_ID_PREFIXES = ("/v1/login-requests/", "/v1/approvals/")
_REQUEST_ID = re.compile(
    "(" + "|".join(map(re.escape, _ID_PREFIXES)) + r")[^\s?#\"'<>]+", re.IGNORECASE
)
# query parameters shown as sent: the API's own, whose values say nothing secret
_SHOWN_PARAMETER = re.compile(r"wait=[0-9]{1,6}")


# what the request being served did for whom, for its access line (each request is a
# task of its own, with its own copy of the context)
_ACCESS_NOTE: ContextVar[str | None] = ContextVar("access_note", default=None)


def note_on_access_line(note: str) -> None:
    """Have this request's access line end with ` - <note>`: the record of what it did
    for whom, in the one line the request writes anyway (uvicorn writes the access line
    in the request's own task, when the response starts)."""
    _ACCESS_NOTE.set(note)


def take_note() -> str | None:
    """This request's note, taken (once): by its access line as the formatter writes it,
    or, when no access line carried it (uvicorn writes none for a client that left
    before its answer started), by `api_worker.front.Front`, which logs it as a line of
    its own, so the record is never lost."""
    note = _ACCESS_NOTE.get()
    if note is not None:
        _ACCESS_NOTE.set(None)
    return note


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/codes/redeem`), never the raw path,
    so labels stay few and paths with identifiers never reach a log."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def redact_ids(text: str) -> str:
    """`text` with every id after `/v1/login-requests/` or `/v1/approvals/` replaced by
    `{id}`."""
    # ASCII text holds a prefix in any case only if its lower case holds it (a fifth
    # of the regular expression's cost); other text may match it through Unicode case
    # folding, so it always goes through the expression
    if text.isascii():
        lowered = text.lower()
        if not any(prefix in lowered for prefix in _ID_PREFIXES):
            return text
    return _REQUEST_ID.sub(r"\1{id}", text)


def redact_query(path: str) -> str:
    """`/v1/me?access_token=x` -> `/v1/me?<redacted>`, `...?wait=5&t=x` -> `...?wait=5&<redacted>`;
    a path without a query stays."""
    bare, question, query = path.partition("?")
    if not question:
        return bare
    pairs = query.split("&")
    shown = [pair for pair in pairs if _SHOWN_PARAMETER.fullmatch(pair)]
    if len(shown) < len(pairs):
        shown.append(REDACTED)
    return f"{bare}?{'&'.join(shown)}"


class RedactingFormatter(logging.Formatter):
    """A Formatter that leaves no query string in the access log and no login request
    id anywhere (message, arguments, traceback)."""

    # the second whose default timestamp text was made last, and that text
    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        # uvicorn's access line: '%s - "%s %s HTTP/%s" %d' (client, method, path, version,
        # status)
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            path = args[2]
            if isinstance(path, str) and "?" in path:
                record.args = (*args[:2], redact_query(path), *args[3:])
            # taken once: the record is the request's own, and `format` may see it again
            note = take_note() if isinstance(record.msg, str) else None
            if note is not None:
                record.msg = f"{record.msg} - {note.replace('%', '%%')}"
        if record.exc_info or record.exc_text or record.stack_info or self._plain is None:
            return redact_ids(super().format(record))
        # logging.Formatter.format for a line with no traceback, in one step
        record.message = record.getMessage()
        if self._uses_time:
            record.asctime = self.formatTime(record, self.datefmt)
        return redact_ids(self._plain % record.__dict__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        style = self._style
        # the %-format, when `format` may apply it directly (no defaults to merge)
        self._plain: str | None = style._fmt if type(style) is logging.PercentStyle \
            and not getattr(style, "_defaults", None) else None
        self._uses_time = self.usesTime()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own text (`2026-01-31 12:00:00,123`), its strftime done once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        stamp = self._stamp
        if stamp[0] != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            stamp = self._stamp = (second, text)
        if self.default_msec_format:
            return self.default_msec_format % (stamp[1], record.msecs)
        return stamp[1]
