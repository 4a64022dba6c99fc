"""The JSON error model, in one place.

Every error a client sees is `{"error": "<code>", "message": "<text>"}`.
Handlers raise `ApiError` subclasses or the store's exceptions; this module
maps them (and routing's 404/405) to responses. Anything else is logged with
its traceback and answered 500 `internal`, never with the traceback
(`api_worker.front.Front` applies both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from shared.store import InvalidCode, RateLimited, Unavailable

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, error code and a message safe to show."""

    status = 400
    error = "invalid_request"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(ApiError):
    status, error = 400, "invalid_request"


class Unauthorized(ApiError):
    status, error = 401, "unauthorized"


class InvalidToken(ApiError):
    status, error = 401, "invalid_token"


class NotFound(ApiError):
    status, error = 404, "not_found"


class TooLarge(ApiError):
    status, error = 413, "too_large"


class NotJson(ApiError):
    status, error = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    status, error = 429, "rate_limited"


class ServiceUnavailable(ApiError):
    status, error = 503, "unavailable"


def error_response(
    status: int, error: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.message, exc.headers)


async def _invalid_code(request: Request, exc: Exception) -> Response:
    return error_response(400, "invalid_code", "The code is unknown, expired or already used.")


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    return error_response(
        429,
        "rate_limited",
        f"Too many failed attempts; try again in {exc.retry_after} s.",
        {"Retry-After": str(exc.retry_after)},
    )


class _Throttle:
    """At most one log line per `interval` seconds, counting the ones held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._held_back = 0

    def allow(self) -> int | None:
        """None to stay quiet; else how many lines were held back since the last one."""
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return None
        held_back, self._held_back, self._next = self._held_back, 0, now + self._interval
        return held_back


# while Redis is down every request fails the same way: say so every 10 s, not every time
_unavailable_log = _Throttle(10.0)


async def _unavailable(request: Request, exc: Exception) -> Response:
    held_back = _unavailable_log.allow()
    if held_back is not None:
        logger.warning(
            "Redis is unavailable, answering 503 (%s); %d more such requests not logged",
            exc,
            held_back,
        )
    return error_response(503, "unavailable", "The service is temporarily unavailable.")


_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = _HTTP_ERRORS.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error, str(exc.detail), exc.headers)


EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    ApiError: _api_error,
    InvalidCode: _invalid_code,
    RateLimited: _rate_limited,
    Unavailable: _unavailable,
    HTTPException: _http_error,
}
