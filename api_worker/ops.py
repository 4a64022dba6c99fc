"""Operations: liveness, readiness (Redis answers) and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context, metrics


async def healthz(request: Request) -> Response:
    """The process is up and serving; says nothing about Redis."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when Redis answers a PING; `Unavailable` becomes 503."""
    await context.store(request).ping()
    return JSONResponse({"status": "ok"})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics.endpoint, methods=["GET"]),
]
