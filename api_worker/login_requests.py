"""Deep-link login: POST /v1/login-requests and GET /v1/login-requests/{id}[?wait=N].

The client creates a request and sends its user to the deep link; the user
approves in Telegram; the client polls with the request id. With `wait`, the
poll is held until the bot decides (woken through Redis pub/sub, see
`waiters.py`) or `wait` seconds pass, so one call usually suffices.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import require_client
from api_worker.body import json_object
from api_worker.codes import NO_STORE
from api_worker.errors import InvalidRequest, NotFound, ServiceUnavailable, TooManyRequests
from api_worker.waiters import wait_param
from shared.logins import NoBotUsername, PollResult
from shared.store import RateLimited

logger = logging.getLogger(__name__)

MAX_STATE = 128


def _state(body: dict[str, Any]) -> str | None:
    unknown = set(body) - {"state"}
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s) {', '.join(sorted(unknown))}; the body is {{}} or "
            f'{{"state": "<at most {MAX_STATE} characters>"}}.'
        )
    state = body.get("state")
    if state is None:
        return None
    if not isinstance(state, str) or len(state) > MAX_STATE:
        raise InvalidRequest(f'"state" must be a string of at most {MAX_STATE} characters.')
    return state


async def create(request: Request) -> Response:
    client = await require_client(request)
    state = _state(await json_object(request, empty_is_object=True))
    try:
        created = await context.logins(request).create(
            client, state, context.client_address(request)
        )
    except RateLimited as exc:
        raise TooManyRequests(
            f"Too many login requests from this address; try again in {exc.retry_after} s.",
            {"Retry-After": str(exc.retry_after)},
        ) from None
    except NoBotUsername:
        raise ServiceUnavailable(
            "No bot has published its username yet (start the bot worker, or set "
            "TELEGRAM_BOT_USERNAME), so there is no deep link to give."
        ) from None
    return JSONResponse(
        {
            "id": created.id,
            "deep_link": created.deep_link,
            "start_command": created.start_command,
            "expires_in": created.expires_in,
        },
        status_code=201,
        headers=NO_STORE,
    )




def _body(result: PollResult) -> dict[str, Any]:
    if result.status == "pending":
        return {"status": "pending", "expires_in": result.expires_in}
    if result.status == "denied":
        return {"status": "denied"}
    redemption = result.redemption
    assert redemption is not None
    return {
        "status": "approved",
        "user": redemption.user,
        "access_token": redemption.access_token,
        "token_type": "Bearer",
        "expires_in": redemption.expires_in,
        "state": result.state,
    }


async def status(request: Request) -> Response:
    client = await require_client(request)
    wait = wait_param(request)
    login_id: str = request.path_params["id"]
    logins = context.logins(request)
    address = context.client_address(request)
    result = await context.waiters(request).hold(
        logins.id_hash(login_id), lambda: logins.poll(login_id, client, address),
        lambda found: found is not None and found.status == "pending", wait,
    )
    if result is None:
        raise NotFound("No such login request (unknown, expired or already delivered).")
    if result.status == "approved":
        assert result.redemption is not None
        logger.info("login approval delivered for user %s", result.redemption.user["id"])
    return JSONResponse(_body(result), headers=NO_STORE)


routes = [
    Route("/v1/login-requests", create, methods=["POST"]),
    Route("/v1/login-requests/{id}", status, methods=["GET"]),
]
