"""What a request looks like in logs and metric labels: never its variable parts.

- `route_label(scope)`: the matched route's template (`/v1/login-requests/{id}`), the
  label of metrics and of error lines, so labels stay few and no identifier shows.
- `RedactingFormatter`: the one formatter of every API process's log. In uvicorn's
  access log a query string keeps only the parameters the API defines whose values
  are no secret (`wait=30`); anything else becomes `<redacted>` (a client may put a
  token there: `GET /v1/me?access_token=...` is logged `GET /v1/me?<redacted>`). In
  every line, tracebacks included, a login request id becomes `{id}`
  (`/v1/login-requests/{id}`, as the route's template): the id is what its client
  polls with for an access token, so it must not sit in log files.

Every request writes a line or two, so the formatter is made cheap where that changes
nothing: the timestamp's text is made once a second, and a line is searched for ids
only when it can hold one.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import Scope

UNMATCHED = "unmatched"
ACCESS_LOGGER = "uvicorn.access"
REDACTED = "<redacted>"
_LOGIN_PREFIX = "/v1/login-requests/"
_LOGIN_ID = re.compile(rf"({_LOGIN_PREFIX})[^\s?#\"'<>]+", re.IGNORECASE)
# query parameters shown as sent: the API's own, whose values say nothing secret
_SHOWN_PARAMETER = re.compile(r"wait=[0-9]{1,6}")


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/codes/redeem`), never the raw path,
    so labels stay few and paths with identifiers never reach a log."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def redact_ids(text: str) -> str:
    """`text` with every login request id after `/v1/login-requests/` replaced by `{id}`."""
    # ASCII text holds the prefix in any case only if its lower case holds it (a fifth
    # of the regular expression's cost); other text may match it through Unicode case
    # folding, so it always goes through the expression
    if text.isascii() and _LOGIN_PREFIX not in text.lower():
        return text
    return _LOGIN_ID.sub(r"\1{id}", text)


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
        return redact_ids(super().format(record))

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
