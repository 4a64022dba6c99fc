"""Reading what a request carries: a JSON body of at most 4 KiB that is an object, and
text that is text.

Every string a client sends may end up in Redis or in a reply, both UTF-8. JSON can
spell a lone surrogate (`"\\ud800"`) that no UTF-8 encoder accepts, and a URL can
percent-encode bytes that are not UTF-8 (`%FF`, `%ED%A0%80`): both are refused here
with 400 `invalid_request`, in the body and in the URL (path and query) of every
endpoint, before any handler sees them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from api_worker.errors import InvalidRequest, NotJson, TooLarge, error_response

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


def is_text(value: Any) -> bool:
    """Whether every string in a parsed JSON value (keys too) can be written as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which only \\u escapes can spell
        return False
    return True


async def json_object(request: Request, *, empty_is_object: bool = False) -> dict[str, Any]:
    """The body as a JSON object of UTF-8 text; InvalidRequest for anything else. With
    `empty_is_object`, no body at all counts as `{}`."""
    raw = await read_limited(request)
    if not raw.strip():
        if empty_is_object:
            return {}
        raise InvalidRequest("The request body must be a JSON object.")
    if not _declared_json(request.headers.get("content-type", "")):
        # a form another website makes a visitor's browser post never declares JSON
        # (that would need a CORS preflight), so it cannot spend the visitor's budgets
        raise NotJson("Send the body as JSON with 'Content-Type: application/json'.")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # in ASCII text only a \u escape can spell a lone surrogate (json.loads lets
    # UTF-8 and UTF-16 bodies carry encoded ones)
    if (not raw.isascii() or b"\\u" in raw) and not is_text(value):
        raise InvalidRequest(
            "The request body holds a string that is not valid Unicode text "
            "(a lone surrogate such as \\ud800)."
        )
    return value


def _declared_json(content_type: str) -> bool:
    """application/json, or any application/<x>+json, with any parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _utf8(encoded: bytes) -> bool:
    if encoded.isascii() and b"%" not in encoded:  # nothing encoded: ASCII text as it is
        return True
    try:
        unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def text_url(scope: Scope) -> bool:
    """Whether the request's path and query, percent-decoded, are UTF-8 text (the server
    would otherwise read other bytes with U+FFFD in their place, a different text than
    the client sent); `api_worker.front.Front` answers `url_not_text()` if not."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
    return _utf8(raw_path) and _utf8(scope.get("query_string", b"").replace(b"+", b" "))


def url_not_text() -> Response:
    return error_response(
        400, "invalid_request", "The URL holds percent-encoded bytes that are not UTF-8 text."
    )


FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32  # an OAuth form has a dozen at most


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The body as `application/x-www-form-urlencoded` name-value pairs in order (OAuth
    forms, RFC 6749 appendix B), at most 4 KiB of UTF-8 text and MAX_FORM_FIELDS pairs;
    InvalidRequest otherwise. Pairs, not a dict: OAuth refuses a parameter sent twice,
    so the caller must see it."""
    raw = await read_limited(request)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise InvalidRequest(f"Send the body as a form with 'Content-Type: {FORM}'.")
    if not _utf8(raw):
        raise InvalidRequest("The form holds percent-encoded bytes that are not UTF-8 text.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The form is not UTF-8 text.") from None
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict",
                         max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:  # a ValueError too; _utf8 above should have caught it
        raise InvalidRequest("The form is not UTF-8 text.") from None
    except ValueError:
        raise InvalidRequest(
            f"The form holds more than {MAX_FORM_FIELDS} parameters."
        ) from None
