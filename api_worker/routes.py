"""What a request is about, for logs and metric labels, without its variable parts."""

from __future__ import annotations

import logging
import re

from starlette.types import Scope

UNMATCHED = "unmatched"


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/codes/redeem`), never the raw path,
    so labels stay few and paths with identifiers never reach a log."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RedactPaths(logging.Filter):
    """Blank login-request ids out of uvicorn's access log: an id is what its client
    polls with for the access token, so it must not sit in log files."""

    _LOGIN_ID = re.compile(r"(/v1/login-requests/)[^\s?#\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._LOGIN_ID.sub(r"\1{id}", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True
