"""POST /v1/codes/redeem: trade a code from the bot for the user and an access token."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import require_client
from api_worker.body import json_object
from api_worker.errors import InvalidRequest

logger = logging.getLogger(__name__)

# token responses must not be stored by caches on the way (RFC 6749, 5.1)
NO_STORE = {"Cache-Control": "no-store"}


async def redeem(request: Request) -> Response:
    client = await require_client(request)
    body = await json_object(request)
    if "code" not in body:
        raise InvalidRequest('The body must hold the code: {"code": "12345678"}.')
    code = body["code"]
    if not isinstance(code, str):
        raise InvalidRequest('"code" must be a string of digits, e.g. {"code": "12345678"}.')
    result = await context.store(request).redeem_code(
        code, context.client_address(request), client
    )
    logger.info("code redeemed for user %s", result.user["id"])
    return JSONResponse(
        {
            "user": result.user,
            "access_token": result.access_token,
            "token_type": "Bearer",
            "expires_in": result.expires_in,
        },
        headers=NO_STORE,
    )


routes = [Route("/v1/codes/redeem", redeem, methods=["POST"])]
