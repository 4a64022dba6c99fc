"""The Starlette application: routes by resource, the error model, the store's lifecycle.

`create_app(settings)` builds the app; the module-level `app` (for
`uvicorn api_worker.app:app`) loads settings from the environment when
uvicorn starts it, and fails that start with one line on a bad setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api_worker import (
    approvals,
    codes,
    demo,
    events,
    login_requests,
    oidc,
    openapi,
    ops,
    tokens,
)
from api_worker.auth import warn_if_open
from api_worker.delivery import Deliverer
from api_worker.errors import EXCEPTION_HANDLERS
from api_worker.front import Front, direct
from api_worker.waiters import Waiters
from shared.approvals import Approvals
from shared.logins import Logins, decisions
from shared.oidc_grants import OidcGrants
from shared.settings import Settings, SettingsError, load_settings
from shared.store import Store, Unavailable

logger = logging.getLogger(__name__)

# GETs that hand something over once (a login approval and its new access token): HEAD
# is a GET without the body, so it would hand it to no one. These answer HEAD 405.
_DELIVERS_ONCE = (login_requests.status, demo.wait_telegram)


def _head_only_where_safe(routes: list[BaseRoute]) -> list[BaseRoute]:
    """`HEAD` never changes state: Starlette answers HEAD on every GET route by running
    the GET, so the routes that deliver once take it off their methods (405 + Allow)."""
    for route in routes:
        if isinstance(route, Route) and route.endpoint in _DELIVERS_ONCE and route.methods:
            route.methods.discard("HEAD")
    return routes


class Api(Starlette):
    """Starlette with `Front` as its whole middleware stack (the URL check, the error
    model and request metrics in one layer), around the router."""

    def build_middleware_stack(self) -> ASGIApp:
        return Front(self.router, self.exception_handlers)


def _direct(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Each route's endpoint called as it is (`api_worker.front.direct`): `Front`
    handles what it raises."""
    for route in routes:
        assert isinstance(route, Route) and asyncio.iscoroutinefunction(route.endpoint)
        route.app = direct(route.endpoint)
    return routes


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    warn_if_open(settings)
    oidc.announce(settings)
    store = Store.from_settings(settings)
    app.state.store = store
    app.state.logins = Logins(store)
    app.state.approvals = Approvals(store.redis, settings)
    if settings.oidc is not None:
        app.state.oidc_grants = OidcGrants(store.redis, settings)
    waiters = app.state.waiters = Waiters(partial(decisions, settings))
    listener = asyncio.create_task(waiters.run(), name="login-decision listener")
    deliverer = Deliverer(settings, store.redis)
    deliverer.start()
    try:
        try:
            await store.ping()
            await store.warn_if_evicting()
        except Unavailable as exc:
            # not a startup failure: requests get 503 until Redis is back
            logger.warning("Redis is unreachable at start (%s); answering 503 until it is", exc)
        logger.info("API worker started")
        yield
    finally:
        waiters.close()
        await deliverer.close()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await store.close()
        logger.info("API worker stopped")


def create_app(settings: Settings | None = None) -> Starlette:
    """The API app for `settings` (default: loaded from the environment and `.env`)."""
    settings = settings if settings is not None else load_settings()
    demo_routes = demo.routes(settings) if settings.demo_page else []
    app = Api(
        routes=_head_only_where_safe(
            [
                *_direct(
                    [*codes.routes, *tokens.routes, *login_requests.routes, *ops.routes,
                     *openapi.routes, *oidc.routes(settings),
                     *events.routes]
                ),
                *_direct([*approvals.routes]),  # GET only reads: HEAD is safe
                *demo_routes,  # some with middleware of their own
            ]
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    return app


class _FromEnvironment:
    """An ASGI app that builds the real one from the environment at lifespan start.

    Importing this module never reads settings; a bad setting fails uvicorn's
    startup with one line naming the variable instead of an import traceback.
    """

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except SettingsError as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()  # lifespan.startup
                await send(
                    {
                        "type": "lifespan.startup.failed",
                        "message": f"api_worker: configuration error: {exc}",
                    }
                )
                return
        await self._app(scope, receive, send)


app = _FromEnvironment()
