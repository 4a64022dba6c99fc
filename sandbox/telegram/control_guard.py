"""Who may use the control interface: this machine's own pages and programs, never
another website through a visitor's browser.

The control interface plays users and faults with no credentials, so every
`/control/` request must show it comes from here:
- a loopback `Host` naming this server's port (`127.0.0.1:P`, `localhost:P`,
  `[::1]:P`), so a DNS name rebound to 127.0.0.1 by a foreign page is refused;
- no foreign `Origin` (and no `Sec-Fetch-Site` other than `same-origin` or `none`):
  a browser names the page that sent the request, and only the sandbox's own
  chat page may (403 `forbidden`);
- a POST body declared `application/json` (else 415 `unsupported_media_type`): a
  cross-site form can send only form or plain-text types, and a cross-site
  fetch of JSON needs a CORS preflight that the sandbox never grants.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.telegram.errors import ControlError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


def _loopback_port(netloc: str) -> int | None:
    """The port of a loopback `host:port`, else None (80 when no port is given)."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or host.lower() not in LOOPBACK_NAMES:
        return None
    return port if port is not None else 80


def refusal(scope: Scope) -> ControlError | None:
    """Why this request may not use the control interface, or None."""
    headers = Headers(scope=scope)
    server = scope.get("server")
    own_port = server[1] if server else None
    if _loopback_port(headers.get("host", "")) != own_port:
        return ControlError(
            403, "forbidden", "the control interface answers only to a loopback Host"
        )
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme != "http" or _loopback_port(parts.netloc) != own_port:
            return ControlError(403, "forbidden", "requests from other sites are refused")
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _SAFE_FETCH_SITES:
        return ControlError(403, "forbidden", "requests from other sites are refused")
    if scope["method"] == "POST":
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return ControlError(
                415, "unsupported_media_type", "send the body as Content-Type: application/json"
            )
    return None


class SameMachineOnly:
    """ASGI middleware answering a refused control request with its error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = refusal(scope) if scope["type"] == "http" else None
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def guarded(routes: Iterable[Route]) -> list[Route]:
    """The control routes, each behind SameMachineOnly."""
    return [
        Route(
            route.path, route.endpoint, methods=sorted(route.methods or ()), name=route.name,
            middleware=[Middleware(SameMachineOnly)],
        )
        for route in routes
    ]
