"""Typed access to what the app holds for its handlers: settings and the store.

They are read as `app.state["x"]`: Starlette's `app.state.x` finds `x` only after a
failed attribute lookup (an AttributeError made and caught), a microsecond or two each
time, a few times a request."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from api_worker.waiters import Waiters
from shared.logins import Logins
from shared.oidc_grants import OidcGrants
from shared.settings import Settings
from shared.store import Store


def settings(request: Request) -> Settings:
    return cast(Settings, request.scope["app"].state["settings"])


def store(request: Request) -> Store:
    return cast(Store, request.scope["app"].state["store"])


def logins(request: Request) -> Logins:
    return cast(Logins, request.scope["app"].state["logins"])


def oidc_grants(request: Request) -> OidcGrants:
    """The OpenID Connect grants (only where OIDC is on: its routes are mounted then)."""
    return cast(OidcGrants, request.scope["app"].state["oidc_grants"])


def waiters(request: Request) -> Waiters:
    return cast(Waiters, request.scope["app"].state["waiters"])


def client_address(request: Request) -> str:
    """The client's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"
