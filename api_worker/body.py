"""Reading a JSON request body: at most 4 KiB, and it must be an object."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from api_worker.errors import InvalidRequest, TooLarge

MAX_BODY_BYTES = 4096


def _too_large() -> TooLarge:
    return TooLarge(f"The request body must not exceed {MAX_BODY_BYTES} bytes.")


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused as soon as it exceeds `limit`, declared or streamed (chunked)."""
    declared = request.headers.get("Content-Length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("The Content-Length header is not a number.") from None
        if size > limit:
            raise _too_large()
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, *, empty_is_object: bool = False) -> dict[str, Any]:
    """The body as a JSON object; InvalidRequest for anything else. With
    `empty_is_object`, no body at all counts as `{}`."""
    raw = await read_limited(request)
    if not raw.strip():
        if empty_is_object:
            return {}
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value
