"""POST /v1/codes/redeem: trade a code from the bot for the user and an access token."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import require_client
from api_worker.body import json_object
from api_worker.errors import InvalidRequest
from api_worker.logs import note_on_access_line

# token responses must not be stored by caches on the way (RFC 6749, 5.1)
NO_STORE = {"Cache-Control": "no-store"}

# JSONResponse's encoding (json.dumps with these options makes an encoder each call)
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class TokenResponse(Response):
    """200 with a JSON body and `Cache-Control: no-store`: what JSONResponse(content,
    headers=NO_STORE) sends, byte for byte, made in one step."""

    media_type = "application/json"

    def __init__(self, content: Any) -> None:
        self.status_code = 200
        self.background = None
        self.body = _encode(content).encode("utf-8")
        self.raw_headers = [
            (b"cache-control", b"no-store"),
            (b"content-length", b"%d" % len(self.body)),
            (b"content-type", b"application/json"),
        ]


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
    note_on_access_line(f"code redeemed for user {result.user['id']}")
    return TokenResponse(
        {
            "user": result.user,
            "access_token": result.access_token,
            "token_type": "Bearer",
            "expires_in": result.expires_in,
        }
    )


routes = [Route("/v1/codes/redeem", redeem, methods=["POST"])]
