"""GET /v1/me and POST /v1/tokens/revoke: what a bearer access token is good for."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import bearer_token, invalid_token, require_client
from api_worker.codes import TokenResponse

logger = logging.getLogger(__name__)


async def me(request: Request) -> Response:
    client = await require_client(request)
    user = await context.store(request).token_user(bearer_token(request), client)
    if user is None:
        raise invalid_token()
    return TokenResponse({"user": user})


async def revoke(request: Request) -> Response:
    client = await require_client(request)
    if not await context.store(request).revoke_token(bearer_token(request), client):
        raise invalid_token()
    logger.info("access token revoked")
    return Response(status_code=204)


routes = [
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/tokens/revoke", revoke, methods=["POST"]),
]
