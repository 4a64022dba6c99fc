"""OpenID Connect provider: the discovery document, the JWKS, and the routes of the flow.

Both are built once per process from the settings (the issuer, the signing keys) and
served as they are: JSON, `Cache-Control: public`, a strong `ETag` answered 304 on a
matching `If-None-Match`, readable from any origin (a browser app fetches them before
it logs anyone in; they hold nothing private), HEAD wherever GET.

Every URL in the discovery document is the issuer followed by the path this process
serves it at: an issuer with a path (`https://example.com/login`) needs a proxy that
sends `/login/...` here as `/...`.

The flow itself: `api_worker.oidc_authorize` (the authorization endpoint and its page)
and `api_worker.oidc_tokens` (token, userinfo, revocation). `routes(settings)` mounts
all of it when OIDC_CLIENTS (or OIDC_CLIENTS_FILE) is set, nothing otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api_worker import oidc_authorize, oidc_tokens
from shared.settings import OidcSettings, Settings

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/oauth/jwks"
AUTHORIZE_PATH = oidc_authorize.PATH
TOKEN_PATH = oidc_tokens.TOKEN_PATH
USERINFO_PATH = oidc_tokens.USERINFO_PATH
REVOKE_PATH = oidc_tokens.REVOKE_PATH
# clients fetch both again after an hour at most: a key added to the file is seen by
# every client within an hour (README "OpenID Connect", rotating keys)
MAX_AGE = 3600
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
SCOPES = ("openid", "profile")
CLAIMS = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
    "name", "preferred_username", "locale", "telegram_id",
)
UI_LOCALES = ("en", "ru")  # the authorization page's languages


def discovery(oidc: OidcSettings) -> dict[str, Any]:
    """The OpenID Provider Metadata (OpenID Connect Discovery 1.0, RFC 8414)."""
    issuer = oidc.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZE_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "userinfo_endpoint": issuer + USERINFO_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [oidc.signing_keys.algorithm],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "claims_supported": list(CLAIMS),
        "ui_locales_supported": list(UI_LOCALES),
        # RFC 9207: the authorization response carries `iss`, against mix-up attacks
        "authorization_response_iss_parameter_supported": True,
        # neither request objects nor the claims parameter; request_uri defaults to true
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
    }


def _document(body: dict[str, Any]) -> Endpoint:
    """A GET (and HEAD) endpoint answering `body` as fixed JSON, cache-friendly."""
    content = json.dumps(body, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE}",
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
    }

    async def endpoint(request: Request) -> Response:
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(content, media_type="application/json", headers=headers)

    return endpoint


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison against each listed tag, or `*`."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def provider_routes(oidc: OidcSettings) -> list[BaseRoute]:
    """The routes of the provider: discovery, the JWKS, the authorization endpoint and
    its page, the token, userinfo and revocation endpoints."""
    return [
        Route(DISCOVERY_PATH, _document(discovery(oidc)), methods=["GET"]),
        Route(JWKS_PATH, _document(oidc.signing_keys.jwks()), methods=["GET"]),
        *oidc_authorize.routes(oidc),
        *oidc_tokens.routes(oidc),
    ]


def routes(settings: Settings) -> list[BaseRoute]:
    """What `create_app` mounts: the provider when OIDC is on, else nothing."""
    return [] if settings.oidc is None else provider_routes(settings.oidc)


def announce(settings: Settings) -> None:
    """Say at start (once logging is set up) that the provider is on, and with which key."""
    if settings.oidc is not None:
        logger.info(
            "OpenID Connect provider on: issuer %s, %d clients, signing key %s",
            settings.oidc.issuer, len(settings.oidc.clients),
            settings.oidc.signing_keys.signing_kid,
        )
