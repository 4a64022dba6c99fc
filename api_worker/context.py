"""Typed access to what the app holds for its handlers: settings and the store."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from api_worker.waiters import Waiters
from shared.logins import Logins
from shared.settings import Settings
from shared.store import Store


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def logins(request: Request) -> Logins:
    return cast(Logins, request.app.state.logins)


def waiters(request: Request) -> Waiters:
    return cast(Waiters, request.app.state.waiters)


def client_address(request: Request) -> str:
    """The client's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"
