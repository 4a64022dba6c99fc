"""Bot API request parameters from a query string, JSON, url-encoded or multipart body.

python-telegram-bot sends url-encoded forms in which every non-string value is
JSON-encoded (`reply_markup`, `entities`, numbers, booleans); the typed getters
below accept both that and native JSON values.
"""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from sandbox.telegram.errors import ApiError, bad_request


class Params:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def has(self, name: str) -> bool:
        return self.values.get(name) not in (None, "")

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            return value
        return json.dumps(value) if isinstance(value, dict | list) else str(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("true", "1", "yes")

    def structured(self, name: str) -> Any:
        """A structured value (object or array), decoded when it arrived as a JSON string."""
        value = self.values.get(name)
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value


async def read_params(request: Request) -> Params:
    values: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return Params(values)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON request body") from None
        if not isinstance(decoded, dict):
            raise bad_request("request body must be a JSON object")
        values.update(decoded)
    elif content_type.startswith("multipart/form-data"):
        values.update(_multipart(request.headers["content-type"], body))
    elif content_type.startswith("application/x-www-form-urlencoded") or not content_type:
        try:
            values.update(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise bad_request("request body is not UTF-8") from None
    else:
        raise ApiError(400, f"Bad Request: unsupported Content-Type {content_type!r}")
    return Params(values)


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    values: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename():
            continue  # files are not part of the supported subset
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            values[name] = payload.decode("utf-8", "replace")
    return values
