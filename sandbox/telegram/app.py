"""create_app(): the Bot API endpoint, the control interface and the chat page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sandbox.telegram import control, control_faults
from sandbox.telegram.botapi import endpoint
from sandbox.telegram.errors import ControlError
from sandbox.telegram.flood import Limits
from sandbox.telegram.state import Sandbox

logger = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return exc.response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal", "message": "unexpected sandbox error"}, 500)


def create_app(bot_username: str | None = None, limits: Limits | None = None) -> Starlette:
    """The sandbox app; `limits` are the flood limits at start and after every reset."""
    sandbox = Sandbox(bot_username=bot_username, limits=limits)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(trust_env=False) as http:
            app.state.http = http
            yield
            sandbox.reset()  # stops webhook deliveries before the client closes

    app = Starlette(
        routes=[
            Route("/", _index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/bot{token}/{method}", endpoint, methods=["GET", "POST"]),
            *control.routes,
            *control_faults.routes,
        ],
        exception_handlers={ControlError: _control_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
