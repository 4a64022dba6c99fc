"""OpenID Connect: the token, userinfo and revocation endpoints.

`POST /oauth/token` (RFC 6749 3.2, OIDC Core 3.1.3): a form; the client authenticates
by `client_secret_basic` (RFC 6749 2.3.1: id and secret form-urlencoded, then Basic) or
`client_secret_post` when confidential, by its `client_id` alone (`none`) when public;
two methods at once, an unknown client, a wrong or missing secret are 401
`invalid_client`. Grants:
- `authorization_code`: code and redirect_uri are required (else `invalid_request`);
  so is code_verifier, PKCE for every client, but a missing one is `invalid_grant`
  like a wrong one (RFC 7636 4.6) and spends the code as a wrong one does;
- `refresh_token`: rotated; `scope` is not narrowed, the answer names the scope first
  granted (RFC 6749 5.1).
Both give an access token, the next refresh token and, for an `openid` scope, an ID
token.

The ID token (OIDC Core 2, 3.1.3.6) is signed RS256 by the first signing key (`kid` in
its header) and lives ID_TOKEN_TTL_SECONDS: `iss`, `sub` (the Telegram id as a string),
`aud` (the client id), `exp`, `iat`, `auth_time`, `nonce` whenever the authorization
request had one (never on a refresh, OIDC Core 12.2), `at_hash`, `telegram_id`, and
with the `profile` scope `name`, `preferred_username` and `locale` where known.

`GET|POST /oauth/userinfo` (OIDC Core 5.3, RFC 6750 2.1: the Authorization header only)
answers the same user claims for an OIDC access token that counts; anything else is
401 `invalid_token` with `WWW-Authenticate: Bearer error="invalid_token"`.

`POST /oauth/revoke` (RFC 7009): the same client authentication; a refresh token ends
its family (and the access tokens it issued), an access token stops counting at once.
Unknown, malformed, expired or revoked tokens are 200 (RFC 7009 2.2); another client's
token is refused `invalid_grant` and nothing changes (see `revoke`).

Rules:
- Errors are RFC 6749 5.2 bodies, `{"error", "error_description", "message"}` (the same
  text twice, so the house model `{"error", "message"}` holds too); every answer is
  `Cache-Control: no-store`, `Pragma: no-cache`.
- Browser apps (public clients) call all three: every answer has
  `Access-Control-Allow-Origin: *` and OPTIONS answers the preflight; no credentials
  (cookies) are ever asked for or allowed. HEAD is only where GET is (userinfo, a read).
- Limits: each invalid_client and invalid_grant at the token and revocation endpoints
  counts against the client address (`shared.limits.FailureCounter` under
  `keys.oidc_fails`, an IPv6 /64 as one; API_KEY_FAIL_LIMIT per
  API_KEY_FAIL_WINDOW_SECONDS); at the limit every request from it is 429 with
  `Retry-After` until the window ends. Success and malformed requests spend nothing.
  Failures sent at once may pass the limit by as many as are in flight (a check, then
  a count, as for wrong API keys): what it guards (256-bit codes, sealed refresh
  tokens, client secrets of at least 24 characters) is not guessed at any such rate;
  the limit is against floods, not luck.
- Redis unavailable: 503 `unavailable`. Nothing here logs or echoes a code, token,
  secret or verifier; only configured client ids and user ids are logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api_worker import context
from api_worker.auth import bearer_token, invalid_token
from api_worker.body import form_pairs
from api_worker.errors import (
    EXCEPTION_HANDLERS,
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    TooManyRequests,
)
from shared import keys
from shared.codes import User
from shared.hashing import b64url
from shared.limits import FailureCounter, RateLimited
from shared.oidc_grants import REFRESH_PREFIX, Grant, InvalidGrant, Revoked, has_profile
from shared.settings import OidcClient, OidcSettings
from shared.store import Unavailable

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

# the paths `api_worker.oidc`'s discovery document names (it imports this module)
TOKEN_PATH = "/oauth/token"
USERINFO_PATH = "/oauth/userinfo"
REVOKE_PATH = "/oauth/revoke"
# An ID token is read once, when the relying party receives it; an hour is what most
# providers give and bounds how long a retired signing key must stay published (README
# "OpenID Connect", rotating keys). The access token's own lifetime is the same.
ID_TOKEN_TTL_SECONDS = 3600
BASIC_REALM = 'Basic realm="tglogin"'

# RFC 6749 5.1/5.2: token answers, errors included, are never cached
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "WWW-Authenticate, Retry-After",
}
_TOKEN_PARAMS = frozenset({
    "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope",
    "client_id", "client_secret", "client_assertion", "client_assertion_type",
})
_REVOKE_PARAMS = frozenset({
    "token", "token_type_hint", "client_id", "client_secret", "client_assertion",
    "client_assertion_type",
})


class InvalidClient(ApiError):
    status, error = 401, "invalid_client"


class InvalidGrantError(ApiError):
    status, error = 400, "invalid_grant"


class UnsupportedGrantType(ApiError):
    status, error = 400, "unsupported_grant_type"


def _oauth_error(exc: ApiError) -> JSONResponse:
    body = {"error": exc.error, "error_description": exc.message, "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


# -- the request ----------------------------------------------------------------------------


async def _form(request: Request, known: frozenset[str]) -> dict[str, str]:
    """The form's parameters we know (RFC 6749 3.1: others are ignored, an empty one is
    as if omitted, one sent twice is refused); InvalidRequest for anything but a form
    of UTF-8 text within the API's body limit."""
    pairs = await form_pairs(request)
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in known or not value:
            continue
        if name in form:
            raise InvalidRequest(f"The parameter {name} is sent more than once.")
        form[name] = value
    return form


def _required(form: Mapping[str, str], *names: str) -> list[str]:
    missing = [name for name in names if name not in form]
    if missing:
        raise InvalidRequest(f"Required: {', '.join(missing)}.")
    return [form[name] for name in names]


def _refused(message: str, basic: bool) -> InvalidClient:
    """RFC 6749 5.2: a client that tried Basic is answered with the Basic challenge."""
    return InvalidClient(message, {"WWW-Authenticate": BASIC_REALM} if basic else None)


def _basic(value: str) -> tuple[str, str]:
    """RFC 6749 2.3.1: base64 of `id:secret`, each form-urlencoded first."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _refused("The Basic credentials are not base64 of 'client_id:secret'.",
                       True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _refused("The Basic credentials are not 'client_id:secret'.", True)
    try:
        return (unquote_plus(client_id, errors="strict"),
                unquote_plus(secret, errors="strict"))
    except UnicodeDecodeError:
        raise _refused("The Basic credentials are not UTF-8 text.", True) from None


def _authenticate(oidc: OidcSettings, request: Request, form: Mapping[str, str]) -> OidcClient:
    """The client making the request (client_secret_basic, client_secret_post, or none
    for a public client); InvalidClient otherwise."""
    header = request.headers.get("authorization")
    basic = header is not None
    if "client_assertion" in form or "client_assertion_type" in form:
        raise _refused("Client assertions (private_key_jwt, client_secret_jwt) are not "
                       "supported; use client_secret_basic or client_secret_post.", basic)
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise _refused("Authenticate the client with HTTP Basic or in the form.", True)
        if "client_secret" in form:
            raise _refused("Use one client authentication method, not two.", True)
        client_id, secret = _basic(value.strip())
        if form.get("client_id", client_id) != client_id:
            raise _refused("The client_id differs from the Basic credentials'.", True)
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id:
        raise _refused("Client authentication is required (client_id).", basic)
    client = oidc.client(client_id)
    if client is None:
        raise _refused("Client authentication failed.", basic)
    if client.client_secret is None:
        if secret:
            raise _refused("A public client has no secret; send its client_id alone.", basic)
        return client
    if not secret or not hmac.compare_digest(secret.encode(),
                                             client.client_secret.reveal().encode()):
        raise _refused("Client authentication failed.", basic)
    return client


@asynccontextmanager
async def _failures_counted(request: Request) -> AsyncIterator[None]:
    """429 while the address is at its limit; each invalid_client or invalid_grant in
    the block counts one failure against it."""
    settings = context.settings(request)
    counter = FailureCounter(
        context.store(request).redis, settings, settings.api_key_fail_limit,
        settings.api_key_fail_window_seconds, key=keys.oidc_fails,
    )
    address = context.client_address(request)
    await counter.check(address)
    try:
        yield
    except InvalidGrant:
        await counter.fail(address)
        logger.info("oidc grant refused: invalid_grant")
        raise InvalidGrantError(
            "The code or refresh token is invalid, expired, already used or revoked, or "
            "was issued to another client, redirect URI or code verifier."
        ) from None
    except InvalidClient as exc:
        await counter.fail(address)
        logger.info("oidc client authentication refused: %s", exc.message)
        raise


# -- what is answered -----------------------------------------------------------------------


def at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: the left half of SHA-256 of the access token, base64url."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16])


def user_claims(user: User, profile: bool) -> dict[str, Any]:
    """`sub`, `telegram_id`, and with the profile scope what Telegram says of the user."""
    claims: dict[str, Any] = {"sub": str(user["id"]), "telegram_id": int(user["id"])}
    if profile:
        name = " ".join(str(part) for part in (user.get("first_name"), user.get("last_name"))
                        if part)
        if name:
            claims["name"] = name
        if user.get("username"):
            claims["preferred_username"] = str(user["username"])
        if user.get("language_code"):
            claims["locale"] = str(user["language_code"])
    return claims


def id_token(oidc: OidcSettings, grant: Grant) -> str:
    """The ID token of a grant, signed RS256."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": oidc.issuer, "aud": grant.client_id, "exp": now + ID_TOKEN_TTL_SECONDS,
        "iat": now, "auth_time": grant.auth_time, "at_hash": at_hash(grant.access_token),
    }
    if grant.nonce is not None:
        claims["nonce"] = grant.nonce
    claims.update(user_claims(grant.user, has_profile(grant.scope)))
    return oidc.signing_keys.sign(claims)


def _token_response(oidc: OidcSettings, grant: Grant) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": grant.access_token, "token_type": "Bearer",
        "expires_in": grant.expires_in, "refresh_token": grant.refresh_token,
        "scope": grant.scope,
    }
    if "openid" in grant.scope.split():  # an ID token answers an OpenID request only
        body["id_token"] = id_token(oidc, grant)
    return body


# -- the endpoints --------------------------------------------------------------------------


def _token(oidc: OidcSettings) -> Endpoint:
    async def token(request: Request) -> Response:
        form = await _form(request, _TOKEN_PARAMS)
        grants = context.oidc_grants(request)
        async with _failures_counted(request):
            client = _authenticate(oidc, request, form)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                code, redirect_uri = _required(form, "code", "redirect_uri")
                # PKCE for every code: no verifier is a wrong one (RFC 7636 4.6,
                # invalid_grant), and costs the code as a wrong one does
                verifier = form.get("code_verifier", "")
                grant = await grants.redeem(code, client.client_id, redirect_uri, verifier,
                                            context.client_address(request))
            elif grant_type == "refresh_token":
                (refresh,) = _required(form, "refresh_token")
                grant = await grants.refresh(refresh, client.client_id,
                                             context.client_address(request))
            elif grant_type is None:
                raise InvalidRequest("Required: grant_type.")
            else:
                raise UnsupportedGrantType(
                    "grant_type must be authorization_code or refresh_token.")
        logger.info("oidc %s grant for user %s to client %s", grant_type, grant.user["id"],
                    client.client_id)
        return JSONResponse(_token_response(oidc, grant))

    return token


def _userinfo(oidc: OidcSettings) -> Endpoint:
    client_ids = tuple(client.client_id for client in oidc.clients)

    async def userinfo(request: Request) -> Response:
        access = await context.oidc_grants(request).access(bearer_token(request), client_ids)
        if access is None:
            raise invalid_token()
        return JSONResponse(user_claims(access.user, access.profile))

    return userinfo


def _revoke(oidc: OidcSettings) -> Endpoint:
    client_ids = tuple(client.client_id for client in oidc.clients)

    async def revoke(request: Request) -> Response:
        form = await _form(request, _REVOKE_PARAMS)
        grants = context.oidc_grants(request)
        async with _failures_counted(request):
            client = _authenticate(oidc, request, form)
            (token,) = _required(form, "token")
            # the two kinds are told apart by their form: token_type_hint is not needed
            # (RFC 7009 2.1 lets a server ignore it)
            if token.startswith(REFRESH_PREFIX):
                revoked = await grants.revoke_refresh(token, client.client_id)
            else:
                revoked = await grants.revoke_access(token, client.client_id, client_ids)
            if revoked is Revoked.OTHER_CLIENT:
                # RFC 7009 2.1: the server "verifies whether the token was issued to the
                # client making the revocation request. If this validation fails, the
                # request is refused and the client is informed of the error"; RFC 6749
                # 5.2 names the error for a grant "issued to another client". So not 200
                # (which says "revoked or invalid") and nothing revoked; and it counts
                # against the address like any invalid_grant.
                raise InvalidGrant()
        if revoked is Revoked.ENDED:
            logger.info("oidc token revoked by client %s", client.client_id)
        return Response(status_code=200)

    return revoke


# the house handler of Unavailable (every handler there is a coroutine function)
_house_unavailable = cast(Callable[[Request, Exception], Awaitable[Response]],
                          EXCEPTION_HANDLERS[Unavailable])


def _oauth(endpoint: Endpoint, methods: str) -> Endpoint:
    """`endpoint` with the OAuth error model, no-store, CORS and its preflight."""
    preflight = {
        **_CORS,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
        "Allow": methods,
    }

    async def oauth(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=preflight)
        try:
            response = await endpoint(request)
        except ApiError as exc:
            response = _oauth_error(exc)
        except RateLimited as exc:
            response = _oauth_error(TooManyRequests(
                f"Too many failed requests; try again in {exc.retry_after} s.",
                {"Retry-After": str(exc.retry_after)}))
        except Unavailable as exc:
            house = await _house_unavailable(request, exc)  # logs it, throttled
            message = json.loads(bytes(house.body))["message"]
            response = _oauth_error(ServiceUnavailable(message))
        response.headers.update({**_NO_STORE, **_CORS})
        return response

    return oauth


def routes(oidc: OidcSettings) -> list[BaseRoute]:
    return [
        Route(TOKEN_PATH, _oauth(_token(oidc), "POST, OPTIONS"), methods=["POST", "OPTIONS"]),
        Route(USERINFO_PATH, _oauth(_userinfo(oidc), "GET, HEAD, POST, OPTIONS"),
              methods=["GET", "POST", "OPTIONS"]),
        Route(REVOKE_PATH, _oauth(_revoke(oidc), "POST, OPTIONS"), methods=["POST", "OPTIONS"]),
    ]
