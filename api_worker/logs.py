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
"""

from __future__ import annotations

import logging
import re

from starlette.types import Scope

UNMATCHED = "unmatched"
ACCESS_LOGGER = "uvicorn.access"
REDACTED = "<redacted>"
_LOGIN_ID = re.compile(r"(/v1/login-requests/)[^\s?#\"'<>]+", re.IGNORECASE)
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

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        # uvicorn's access line: '%s - "%s %s HTTP/%s" %d' (client, method, path, version,
        # status)
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            path = args[2]
            if isinstance(path, str):
                record.args = (*args[:2], redact_query(path), *args[3:])
        return redact_ids(super().format(record))
