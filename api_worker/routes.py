"""What a request is about, for logs and metric labels, without its variable parts."""

from __future__ import annotations

from starlette.types import Scope

UNMATCHED = "unmatched"


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/codes/redeem`), never the raw path,
    so labels stay few and paths with identifiers never reach a log."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
