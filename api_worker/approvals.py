"""Push approvals: POST /v1/approvals and GET /v1/approvals/{id}[?wait=N].

The client asks a user who has logged in through tglogin to approve one action; the
bot sends the user an Approve/Deny message (or three numbers, with `match`); the
client reads the result with the id, as it reads a login request's, held with `wait`
until the tap (woken through Redis pub/sub, `waiters.py`) or the approval's expiry.
Reading never hands anything over once, so it may be repeated (and HEAD is harmless).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context
from api_worker.auth import require_client
from api_worker.body import json_object
from api_worker.codes import NO_STORE
from api_worker.errors import ApiError, InvalidRequest, NotFound, TooManyRequests
from api_worker.waiters import wait_param
from shared.approvals import (
    MAX_STATE,
    MAX_TEXT,
    Approvals,
    ApprovalStatus,
    UnknownUser,
)
from shared.store import RateLimited

logger = logging.getLogger(__name__)

# Telegram user ids: positive, below 2^52
MAX_USER_ID = 2**52 - 1
_FIELDS = frozenset({"user_id", "text", "state", "match"})
# characters that would turn the quoted text around or hide part of it in the bot's
# message: bidirectional controls and the invisible separators
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class UnknownUserError(ApiError):
    status, error = 404, "unknown_user"


def approvals(request: Request) -> Approvals:
    """The app's approval operations (made in the lifespan, on the app's store)."""
    return cast(Approvals, request.scope["app"].state.approvals)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise InvalidRequest(f'"text" must be a string of 1 to {MAX_TEXT} characters.')
    for c in value:
        if c in _BIDI or (unicodedata.category(c) == "Cc" and c != "\n"):
            raise InvalidRequest(
                '"text" must not hold control characters (other than line breaks) or '
                "bidirectional formatting characters."
            )
    return value


def _request(body: dict[str, Any]) -> tuple[int, str, str | None, bool]:
    unknown = set(body) - _FIELDS
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s) {', '.join(sorted(unknown))}; the body is "
            '{"user_id": <Telegram id>, "text": "...", "state"?: "...", "match"?: true}.'
        )
    user_id = body.get("user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, int) \
            or not 1 <= user_id <= MAX_USER_ID:
        raise InvalidRequest('"user_id" must be a Telegram user id (a positive integer).')
    text = _text(body.get("text"))
    state = body.get("state")
    if state is not None and (not isinstance(state, str) or len(state) > MAX_STATE):
        raise InvalidRequest(f'"state" must be a string of at most {MAX_STATE} characters.')
    match = body.get("match", False)
    if not isinstance(match, bool):
        raise InvalidRequest('"match" must be true or false.')
    return user_id, text, state, match


async def create(request: Request) -> Response:
    client = await require_client(request)
    user_id, text, state, match = _request(await json_object(request))
    try:
        created = await approvals(request).create(client, user_id, text, state, match)
    except UnknownUser:
        raise UnknownUserError(
            "This user has not logged in through this service's bot (recently), so the "
            "bot cannot ask them."
        ) from None
    except RateLimited as exc:
        raise TooManyRequests(
            f"Too many approvals for this user or from this client; try again in "
            f"{exc.retry_after} s.",
            {"Retry-After": str(exc.retry_after)},
        ) from None
    body: dict[str, Any] = {"id": created.id, "expires_in": created.expires_in}
    if created.match_number is not None:
        body["match_number"] = created.match_number
    logger.info("approval queued for user %d", user_id)
    return JSONResponse(body, status_code=201, headers=NO_STORE)




def _body(found: ApprovalStatus) -> dict[str, Any]:
    body: dict[str, Any] = {"status": found.status}
    if found.status == "pending":
        body["expires_in"] = found.expires_in
    if found.user is not None:
        body["user"] = found.user
    if found.state is not None:
        body["state"] = found.state
    return body


def _pending(found: ApprovalStatus | None) -> bool:
    return found is not None and found.status == "pending"


async def status(request: Request) -> Response:
    client = await require_client(request)
    wait = wait_param(request)
    approval_id: str = request.path_params["id"]
    operations = approvals(request)

    async def read() -> ApprovalStatus | None:
        return await operations.status(approval_id, client)

    found = await read()
    if _pending(found) and wait:
        assert found is not None and found.expires_in is not None
        # held until the tap, `wait`, or the approval's expiry (`expires_in` is rounded
        # up: the read after it finds the approval expired)
        found = await context.waiters(request).hold(
            operations.key_hash(approval_id), read, _pending,
            min(float(wait), float(found.expires_in)),
        )
    if found is None:
        raise NotFound("No such approval (unknown, gone, or another client's).")
    return JSONResponse(_body(found), headers=NO_STORE)


routes = [
    Route("/v1/approvals", create, methods=["POST"]),
    Route("/v1/approvals/{id}", status, methods=["GET"]),
]
