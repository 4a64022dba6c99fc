"""Who is calling: the API client (X-API-Key) and the user (a bearer access token)."""

from __future__ import annotations

import logging

from starlette.requests import Request

from api_worker import context
from api_worker.errors import InvalidToken, Unauthorized
from shared.counters import Counter
from shared.limits import FailureCounter
from shared.settings import ApiClient, Settings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
# longer than any token we issue by far; anything longer is not worth a Redis lookup
_MAX_TOKEN_LENGTH = 256


def warn_if_open(settings: Settings) -> None:
    if not settings.api_keys:
        logger.warning(
            "API_KEYS is empty: the API is open, anyone who can reach it may redeem codes"
        )


async def require_client(request: Request) -> ApiClient | None:
    """The calling API client; None when the API is open (no API_KEYS).

    A valid key costs nothing. A missing or wrong one counts against the
    address (`API_KEY_FAIL_LIMIT` per `API_KEY_FAIL_WINDOW_SECONDS`, and the
    global failure alarm): 401 until the limit, then 429 with `Retry-After`
    until the window ends, so keys cannot be guessed at speed.
    """
    settings = context.settings(request)
    if not settings.api_keys:
        return None
    key = request.headers.get(API_KEY_HEADER)
    client = settings.client_for_key(key) if key else None
    if client is not None:
        return client
    store = context.store(request)
    failures = FailureCounter(
        store.redis, settings, settings.api_key_fail_limit, settings.api_key_fail_window_seconds
    )
    address = context.client_address(request)
    # every one counts for the alarm, refused or not: a flood of guesses should ring it
    await store.codes.count_failure(Counter.API_KEY_FAILURES)
    if await failures.fail(address) > settings.api_key_fail_limit:
        await failures.check(address)  # raises RateLimited with the window's rest
    if not key:
        raise Unauthorized(f"The {API_KEY_HEADER} header is required.")
    raise Unauthorized(f"The {API_KEY_HEADER} header does not hold a valid API key.")


def bearer_token(request: Request) -> str:
    """The access token of `Authorization: Bearer <token>`; InvalidToken otherwise."""
    header = request.headers.get("Authorization")
    if header is None:
        raise InvalidToken(
            "The Authorization header with a bearer access token is required.",
            {"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > _MAX_TOKEN_LENGTH:
        raise invalid_token("The Authorization header must be 'Bearer <access token>'.")
    return token


def invalid_token(
    message: str = "The access token is unknown, expired or revoked.",
) -> InvalidToken:
    return InvalidToken(message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
