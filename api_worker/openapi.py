"""GET /openapi.json: an OpenAPI 3.1 description of every endpoint.

The endpoints are few and their contract is fixed; the numbers in it (body size,
`state` length, `wait`, the version) are the code's own constants, so the document
cannot drift from them. What depends on the configuration is served as configured:
with API_KEYS empty no operation asks for the X-API-Key header. New endpoints add
their entry to `PATHS`; `make test` checks every response against the document
(tests/api_worker/test_schema_conformance.py).
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker import context
from api_worker.approvals import MAX_USER_ID
from api_worker.auth import API_KEY_HEADER
from api_worker.body import MAX_BODY_BYTES
from api_worker.events import PAGE as EVENTS_PAGE
from api_worker.login_requests import MAX_STATE
from api_worker.waiters import MAX_WAIT
from shared.approvals import MAX_STATE as MAX_APPROVAL_STATE
from shared.approvals import MAX_TEXT as MAX_APPROVAL_TEXT
from shared.events import EVENT_TYPES
from shared.keys import EVENT_LOG_MAXLEN

Json = dict[str, Any]

try:
    VERSION = version("tglogin")
except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
    VERSION = "0.0.0"


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error(description: str, *codes: str, headers: Json | None = None) -> Json:
    """A JSON error response whose `error` is one of `codes`."""
    error: Json = {"const": codes[0]} if len(codes) == 1 else {"enum": list(codes)}
    response: Json = {
        "description": description,
        "content": _json({"allOf": [_ref("schemas", "Error"), {"properties": {"error": error}}]}),
    }
    if headers:
        response["headers"] = headers
    return response


_STATUS_OK = {"description": "OK", "content": _json(_ref("schemas", "Status"))}
_API_KEY: list[Json] = [{"ApiKey": []}]
_BEARER: list[Json] = [{"ApiKey": [], "Bearer": []}]

RESPONSES: Json = {
    "InvalidRequest": _error(
        "The body is not a JSON object with a string `code`.", "invalid_request"
    ),
    "InvalidCode": _error(
        "The code is unknown, expired or already used (indistinguishable on purpose).",
        "invalid_code",
    ),
    "Unauthorized": _error("API_KEYS is set and X-API-Key is missing or wrong.", "unauthorized"),
    "InvalidToken": _error(
        "`invalid_token`: the bearer token is missing, malformed, unknown, expired or "
        "revoked (with `WWW-Authenticate: Bearer ...`); `unauthorized`: API_KEYS is set and "
        "X-API-Key is missing or wrong.",
        "invalid_token",
        "unauthorized",
        headers={
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer ...`"}
        },
    ),
    "TooLarge": _error(f"The request body is larger than {MAX_BODY_BYTES} bytes.", "too_large"),
    "NotJson": _error(
        "A request body must be sent as `Content-Type: application/json` (so a cross-site "
        "form cannot post one).",
        "unsupported_media_type",
    ),
    "RateLimited": _error(
        "Too many failed attempts (codes, tokens or API keys) from this client address; "
        "wait `Retry-After` seconds.",
        "rate_limited",
        headers={"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    ),
    "Unavailable": _error("Redis cannot be reached; try again shortly.", "unavailable"),
    "InvalidLoginRequest": _error(
        f'The body is not `{{}}` or `{{"state": "<at most {MAX_STATE} characters>"}}`.',
        "invalid_request",
    ),
    "LoginRateLimited": _error(
        "Too many login requests from this client address (LOGIN_REQUEST_LIMIT per "
        "LOGIN_REQUEST_WINDOW_SECONDS); wait `Retry-After` seconds.",
        "rate_limited",
        headers={"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    ),
    "LoginUnavailable": _error(
        "Redis cannot be reached, or no bot has published its username yet (and "
        "TELEGRAM_BOT_USERNAME is unset), so there is no deep link to give; the message says "
        "which.",
        "unavailable",
    ),
    "InvalidWait": _error(
        f"`wait` is not a whole number from 0 to {MAX_WAIT}.", "invalid_request"
    ),
    "LoginNotFound": _error(
        "No such login request for this client: unknown, expired, another client's, or its "
        "approval was already delivered.",
        "not_found",
    ),
    "InvalidApproval": _error(
        '`invalid_request`: the body is not `{"user_id": <Telegram id>, "text": "<1 to '
        f'{MAX_APPROVAL_TEXT} characters>", "state"?: "<at most {MAX_APPROVAL_STATE}>", '
        '"match"?: true|false}`, or the text holds control or bidirectional formatting '
        "characters (line breaks are fine).",
        "invalid_request",
    ),
    "UnknownUser": _error(
        "The user has not logged in through this service's bot within TOKEN_TTL_SECONDS, "
        "so the bot does not know them.",
        "unknown_user",
    ),
    "ApprovalRateLimited": _error(
        "Too many approvals: for this user from this client (APPROVAL_USER_LIMIT per "
        "APPROVAL_USER_WINDOW_SECONDS), for this user from all clients together "
        "(APPROVAL_USER_TOTAL_LIMIT in the same window), or from this client "
        "(APPROVAL_CLIENT_LIMIT per "
        "APPROVAL_CLIENT_WINDOW_SECONDS, unknown users included); or too many failed API "
        "keys from this address. Wait `Retry-After` seconds.",
        "rate_limited",
        headers={"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    ),
    "ApprovalUnavailable": _error(
        "Redis cannot be reached, or answered too slowly; try again shortly. The approval "
        "may have been created all the same: then the bot sends it within seconds and its "
        "events (approval.approved, .denied, .expired) name it, with your `state`.",
        "unavailable",
    ),
    "ApprovalNotFound": _error(
        "No such approval for this client: unknown, gone (APPROVAL_TTL_SECONDS after it "
        "was decided, or after the bot marked it expired, within seconds of its expiry), "
        "or another client's.",
        "not_found",
    ),
    "InvalidEventsQuery": _error(
        "`after` is not the id of an event this API returned, `wait` is not a whole "
        f"number from 0 to {MAX_WAIT}, or the query has another parameter.",
        "invalid_request",
    ),
    "Internal": _error("An unexpected error; it is logged.", "internal"),
    "InvalidUrl": _error(
        "The URL's path or query holds percent-encoded bytes that are not UTF-8 text.",
        "invalid_request",
    ),
}

SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "first_name", "last_name", "language_code"],
        "properties": {
            "id": {"type": "integer", "description": "Telegram user id"},
            "username": {"type": ["string", "null"]},
            "first_name": {"type": "string"},
            "last_name": {"type": ["string", "null"]},
            "language_code": {"type": ["string", "null"]},
        },
    },
    "RedeemRequest": {
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {
                "type": "string",
                "description": "The code from the bot; spaces and dashes are ignored.",
                "examples": ["1234 5678"],
            }
        },
    },
    "Redemption": {
        "type": "object",
        "required": ["user", "access_token", "token_type", "expires_in"],
        "properties": {
            "user": _ref("schemas", "User"),
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "description": "seconds"},
        },
    },
    "Me": {
        "type": "object",
        "required": ["user"],
        "properties": {"user": _ref("schemas", "User")},
    },
    "LoginRequestCreate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "state": {
                "type": "string",
                "maxLength": MAX_STATE,
                "description": "Handed back with the approval, e.g. to tie it to a session.",
            }
        },
    },
    "LoginRequest": {
        "type": "object",
        "required": ["id", "deep_link", "start_command", "expires_in"],
        "properties": {
            "id": {
                "type": "string",
                "description": "What you poll with. Keep it on your server; it is not in the link.",
            },
            "deep_link": {
                "type": "string",
                "description": "Send the user here: https://t.me/<bot>?start=<payload>",
            },
            "start_command": {
                "type": "string",
                "description": "The same as a message to type to the bot: /start <payload>",
            },
            "expires_in": {"type": "integer", "description": "seconds until it expires"},
        },
    },
    "ApprovalCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["user_id", "text"],
        "properties": {
            "user_id": {
                "type": "integer", "minimum": 1, "maximum": MAX_USER_ID,
                "description": "The Telegram id of a user who has logged in through the bot.",
            },
            "text": {
                "type": "string", "minLength": 1, "maxLength": MAX_APPROVAL_TEXT,
                "pattern": "\\S",
                "description": "The action to approve, quoted to the user as plain text.",
                "examples": ["Pay 25.00 EUR to Acme Shop"],
            },
            "state": {
                "type": "string", "maxLength": MAX_APPROVAL_STATE,
                "description": "Handed back with the status.",
            },
            "match": {
                "type": "boolean", "default": False,
                "description": "Show `match_number` to the user; the bot asks them to pick "
                "it among three, and a wrong pick denies.",
            },
        },
    },
    "Approval": {
        "type": "object",
        "required": ["id", "expires_in"],
        "properties": {
            "id": {"type": "string", "description": "What you read the result with."},
            "expires_in": {"type": "integer", "description": "seconds until it expires"},
            "match_number": {
                "type": "integer",
                "description": "With `match`: the number to show the user.",
            },
        },
    },
    "ApprovalStatus": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {
                "enum": ["pending", "approved", "denied", "expired", "undeliverable"],
                "description": "`undeliverable`: the bot cannot message the user (they "
                "blocked it, or never opened a chat with it). `expired`: past its expiry, "
                "read so at once (the bot marks it, with approval.expired, within seconds).",
            },
            "expires_in": {"type": "integer", "description": "pending: seconds left"},
            "user": {
                **_ref("schemas", "User"),
                "description": "Who decided it (approved, denied).",
            },
            "state": {"type": "string"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "webhook_id", "type", "timestamp", "data"],
        "properties": {
            "id": {
                "type": "string", "pattern": "^[0-9]+-[0-9]+$",
                "description": "The pull cursor: pass as `after` to get what came later. "
                "Not the event's identity (a duplicate has an `id` of its own).",
            },
            "webhook_id": {
                "type": "string",
                "description": "The event's stable id, the same as its webhooks' "
                "`webhook-id`. Delivery is at least once: an event may appear twice, "
                "with two `id`s and this one `webhook_id`; deduplicate on it.",
            },
            "type": {"enum": list(EVENT_TYPES)},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {
                "type": "object",
                "required": ["user"],
                "description": "`user`, and `id` of the request it concerns where one exists.",
                "properties": {"user": _ref("schemas", "User"), "id": {"type": "string"}},
            },
        },
    },
    "Events": {
        "type": "object",
        "required": ["events", "next", "gap"],
        "properties": {
            "events": {"type": "array", "items": _ref("schemas", "Event"),
                       "maxItems": EVENTS_PAGE},
            "next": {"type": "string", "description": "The `after` of the next call."},
            "gap": {
                "type": "boolean",
                "description": "True when events after your `after` are no longer kept "
                f"(a client keeps its last {EVENT_LOG_MAXLEN:,} events): `events` then "
                "start from the oldest kept, and what you missed must be reconciled "
                "another way. False otherwise, and when `after` is not given.",
            },
        },
    },
    "LoginStatus": {
        "oneOf": [
            {
                "type": "object",
                "required": ["status", "expires_in"],
                "properties": {
                    "status": {"const": "pending"},
                    "expires_in": {"type": "integer", "description": "seconds"},
                },
            },
            {
                "type": "object",
                "description": "Given once; the request is gone afterwards (404).",
                "required": [
                    "status", "user", "access_token", "token_type", "expires_in", "state"
                ],
                "properties": {
                    "status": {"const": "approved"},
                    "user": _ref("schemas", "User"),
                    "access_token": {"type": "string"},
                    "token_type": {"const": "Bearer"},
                    "expires_in": {"type": "integer", "description": "token lifetime, seconds"},
                    "state": {"type": ["string", "null"]},
                },
            },
            {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "denied"}},
            },
        ]
    },
}

PATHS: Json = {
    "/v1/codes/redeem": {
        "post": {
            "summary": "Redeem a code from the bot, once, for the user and an access token",
            "operationId": "redeemCode",
            "security": _API_KEY,
            "requestBody": {"required": True, "content": _json(_ref("schemas", "RedeemRequest"))},
            "responses": {
                "200": {"description": "Redeemed", "content": _json(_ref("schemas", "Redemption"))},
                "400": {
                    "description": "`invalid_request` or `invalid_code`",
                    "content": _json(_ref("schemas", "Error")),
                },
                "401": _ref("responses", "Unauthorized"),
                "413": _ref("responses", "TooLarge"),
                "415": _ref("responses", "NotJson"),
                "429": _ref("responses", "RateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/v1/me": {
        "get": {
            "summary": "The user an access token belongs to",
            "operationId": "getMe",
            "security": _BEARER,
            "responses": {
                "200": {"description": "The user", "content": _json(_ref("schemas", "Me"))},
                "401": _ref("responses", "InvalidToken"),
                "429": _ref("responses", "RateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/v1/tokens/revoke": {
        "post": {
            "summary": "End the access token given as the bearer token",
            "operationId": "revokeToken",
            "security": _BEARER,
            "responses": {
                "204": {"description": "Revoked"},
                "401": _ref("responses", "InvalidToken"),
                "429": _ref("responses", "RateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/v1/login-requests": {
        "post": {
            "summary": "Start a deep-link login: a link that opens the bot, and an id to poll",
            "operationId": "createLoginRequest",
            "security": _API_KEY,
            "requestBody": {
                "required": False,
                "content": _json(_ref("schemas", "LoginRequestCreate")),
            },
            "responses": {
                "201": {
                    "description": "Created",
                    "content": _json(_ref("schemas", "LoginRequest")),
                },
                "400": _ref("responses", "InvalidLoginRequest"),
                "401": _ref("responses", "Unauthorized"),
                "413": _ref("responses", "TooLarge"),
                "415": _ref("responses", "NotJson"),
                "429": _ref("responses", "LoginRateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "LoginUnavailable"),
            },
        }
    },
    "/v1/login-requests/{id}": {
        "get": {
            "summary": "The status of a deep-link login; with `wait`, held until it changes",
            "operationId": "getLoginRequest",
            "security": _API_KEY,
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The `id` from creating the request (not the link payload).",
                },
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0
                    },
                    "description": "Seconds to hold the answer while the request is pending.",
                },
            ],
            "responses": {
                "200": {
                    "description": "pending, approved (once) or denied",
                    "content": _json(_ref("schemas", "LoginStatus")),
                },
                "400": _ref("responses", "InvalidWait"),
                "401": _ref("responses", "Unauthorized"),
                "429": _ref("responses", "RateLimited"),
                "404": _ref("responses", "LoginNotFound"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/v1/approvals": {
        "post": {
            "summary": "Ask a known user to approve an action in the bot (a second factor)",
            "operationId": "createApproval",
            "security": _API_KEY,
            "requestBody": {
                "required": True, "content": _json(_ref("schemas", "ApprovalCreate")),
            },
            "responses": {
                "201": {"description": "Queued", "content": _json(_ref("schemas", "Approval"))},
                "400": _ref("responses", "InvalidApproval"),
                "401": _ref("responses", "Unauthorized"),
                "404": _ref("responses", "UnknownUser"),
                "413": _ref("responses", "TooLarge"),
                "415": _ref("responses", "NotJson"),
                "429": _ref("responses", "ApprovalRateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "ApprovalUnavailable"),
            },
        }
    },
    "/v1/approvals/{id}": {
        "get": {
            "summary": "An approval's status; with `wait`, held until it changes",
            "operationId": "getApproval",
            "security": _API_KEY,
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The `id` from creating the approval.",
                },
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0
                    },
                    "description": "Seconds to hold the answer while the approval is pending.",
                },
            ],
            "responses": {
                "200": {
                    "description": "pending, approved, denied, expired or undeliverable",
                    "content": _json(_ref("schemas", "ApprovalStatus")),
                },
                "400": _ref("responses", "InvalidWait"),
                "401": _ref("responses", "Unauthorized"),
                "404": _ref("responses", "ApprovalNotFound"),
                "429": _ref("responses", "RateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/v1/events": {
        "get": {
            "summary": "This client's events, oldest first (pull instead of webhooks); with "
                       "`wait`, held until one arrives",
            "operationId": "listEvents",
            "security": _API_KEY,
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"},
                    "description": "The `id` of the last event you have (or the `next` of "
                                   "the last answer); none: from the oldest kept. If "
                                   "events after it are no longer kept, the answer has "
                                   "`gap` true.",
                },
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0
                    },
                    "description": "Seconds to hold the answer while there is no event.",
                },
            ],
            "responses": {
                "200": {"description": "Events", "content": _json(_ref("schemas", "Events"))},
                "400": _ref("responses", "InvalidEventsQuery"),
                "401": _ref("responses", "Unauthorized"),
                "429": _ref("responses", "RateLimited"),
                "500": _ref("responses", "Internal"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process serves requests",
            "operationId": "healthz",
            "security": [],
            "responses": {"200": _STATUS_OK},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis answers",
            "operationId": "readyz",
            "security": [],
            "responses": {"200": _STATUS_OK, "503": _ref("responses", "Unavailable")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "security": [],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}
            },
        }
    },
}

# any URL can carry bytes that are not UTF-8 (api_worker.body.text_url): 400 everywhere
for _operations in PATHS.values():
    for _operation in _operations.values():
        _operation["responses"].setdefault("400", _ref("responses", "InvalidUrl"))

DOCUMENT: Json = {
    "openapi": "3.1.0",
    "info": {
        "title": "tglogin",
        "version": VERSION,
        "description": (
            "Log in with a one-time code from a Telegram bot, or with a deep link the user "
            "approves in the bot. Every error body is "
            '{"error": "<code>", "message": "<text>"}. When the server sets API_KEYS, '
            "every /v1/* call needs the X-API-Key header. When it sets OIDC_CLIENTS, it is "
            "also an OpenID Connect provider, whose endpoints (/oauth/*) are described the "
            "standard way, by /.well-known/openid-configuration."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            "Bearer": {"type": "http", "scheme": "bearer"},
        },
    },
}


def _open(document: Json) -> Json:
    """The document for a server without API_KEYS: no operation asks for X-API-Key."""
    opened = copy.deepcopy(document)
    for operations in opened["paths"].values():
        for operation in operations.values():
            operation["security"] = [
                {k: v for k, v in requirement.items() if k != "ApiKey"}
                for requirement in operation.get("security", [])
                if set(requirement) != {"ApiKey"}
            ]
    opened["components"]["securitySchemes"].pop("ApiKey")
    return opened


OPEN_DOCUMENT = _open(DOCUMENT)


async def openapi(request: Request) -> Response:
    keys = context.settings(request).api_keys
    return JSONResponse(DOCUMENT if keys else OPEN_DOCUMENT)


routes = [Route("/openapi.json", openapi, methods=["GET"])]
