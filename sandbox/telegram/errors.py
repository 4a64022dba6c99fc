"""The two error shapes of the sandbox: Bot API errors and control-interface errors."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    """A Bot API failure, answered as Telegram does: `{"ok": false, ...}` with the HTTP status."""

    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return JSONResponse(body, status_code=self.error_code)


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


class ControlError(Exception):
    """A control-interface failure: `{"error": ..., "message": ...}` with a 4xx status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "message": self.message}, status_code=self.status)
