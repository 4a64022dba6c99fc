"""The demo's "Log in with OpenID Connect": Acme Shop as a relying party of this API's own
provider, with Authlib's Starlette client rather than hand-written OAuth.

`/demo/oidc/login` sends the browser to the authorization endpoint (found by discovery)
with state, nonce and a PKCE S256 challenge, which Authlib keeps in the demo's signed
session cookie (so the visitor can read their own verifier and nonce, never change them);
`/demo/oidc/callback` takes back only a state this browser started, checks `iss`
(RFC 9207), exchanges the code as a confidential client, validates the ID token against
the JWKS (signature, iss, aud, exp, nonce, at_hash: Authlib with joserfc), and asks
userinfo, whose `sub` must be the ID token's. The visitor is then logged in to the shop:
its own session, as after any social login, until Log out revokes the refresh token (and
with it the access token, RFC 7009). Every fault there ends on the demo's page with a
message, never a 500.

The client is one the operator gave the provider (OIDC_CLIENTS): the first whose
redirect URIs include this API's `<OIDC_ISSUER>/demo/oidc/callback` (`make run` adds
one, `acme-demo`, when no clients are configured). Without one the page offers no
OpenID Connect button. Authlib logs PKCE verifiers at DEBUG: the API worker's logging
configuration holds its loggers at WARNING (`api_worker.__main__.log_config`).

`api_worker.demo` serves the page and mounts these routes under its session cookie.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2
from authlib.common.errors import AuthlibBaseError  # type: ignore[import-untyped]
from authlib.common.security import is_secure_transport  # type: ignore[import-untyped]
from authlib.integrations.base_client import (  # type: ignore[import-untyped]
    MismatchingStateError,
)
from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]
from authlib.integrations.starlette_client import OAuth  # type: ignore[import-untyped]
from authlib.oauth2.client import DEFAULT_HEADERS  # type: ignore[import-untyped]
from joserfc.errors import JoseError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from api_worker import context
from api_worker.errors import ServiceUnavailable
from api_worker.oidc import DISCOVERY_PATH, TOKEN_PATH
from shared.settings import OidcClient, Settings

logger = logging.getLogger(__name__)

PAGE_PATH = "/demo"  # the demo's page (api_worker.demo): every login here ends on it
OIDC_LOGIN_PATH = "/demo/oidc/login"
CALLBACK_PATH = "/demo/oidc/callback"  # after the issuer: the demo client's redirect URI
OIDC_SCOPE = "openid profile"
VIA_OIDC = "openid_connect"  # /demo/session's `via` for a login through OpenID Connect
_TIMEOUT = 10.0  # seconds for any call to the provider
UNAVAILABLE = "Logging in is temporarily unavailable. Please try again in a moment."
_SAID = {
    "access_denied": "The login was denied in Telegram. Nothing happened.",
    "declined": "The login did not complete. Please try again.",
    "state": "That login was not started on this page, or it took too long. "
    "Please log in again.",
    "issuer": "That login answer did not come from our login service, so it was ignored. "
    "Please log in again.",
    "unverified": "That login could not be verified, so it was ignored. Please try again.",
}
# what can go wrong talking to the provider: its errors, a token that does not validate,
# no answer, an answer that is not what the standard says
_RP_FAULTS = (AuthlibBaseError, JoseError, httpx2.HTTPError, ValueError, KeyError, TypeError)


def demo_client(settings: Settings) -> OidcClient | None:
    """The client the demo logs in as: the first of the provider's clients with this API's
    `<issuer>/demo/oidc/callback` among its redirect URIs; None without one."""
    if settings.oidc is None:
        return None
    callback = settings.oidc.issuer + CALLBACK_PATH
    return next((c for c in settings.oidc.clients if callback in c.redirect_uris), None)


class RelyingParty:
    """The demo as an OpenID Connect client of this API's provider, through Authlib."""

    def __init__(self, issuer: str, client: OidcClient) -> None:
        self.redirect_uri = issuer + CALLBACK_PATH
        self._id = client.client_id
        self._secret = client.client_secret.reveal() if client.client_secret else None
        # confidential: the secret in a Basic header; public: the client id alone
        self._method = "client_secret_basic" if self._secret else "none"
        self.app: Any = OAuth().register(
            "tglogin",  # also in the session's key of each login's state
            client_id=self._id,
            client_secret=self._secret,
            server_metadata_url=issuer + DISCOVERY_PATH,
            client_kwargs={
                "scope": OIDC_SCOPE,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": self._method,
                "timeout": _TIMEOUT,
            },
        )

    async def login(self, request: Request) -> Response:
        """To the authorization endpoint, with state, nonce and PKCE kept in the session."""
        try:
            response: Response = await self.app.authorize_redirect(request, self.redirect_uri)
        except _RP_FAULTS as exc:
            logger.warning("demo: OpenID Connect discovery failed: %r", exc)
            return _back(request, "error", UNAVAILABLE)
        return response

    async def callback(self, request: Request) -> Response:
        """The provider's answer: only for a state this browser started; then the code
        exchanged, the ID token validated, userinfo read."""
        params = request.query_params
        app = self.app
        try:
            metadata = await app.load_server_metadata()
            started = await app.framework.get_state_data(request.session, params.get("state"))
            if started is None:
                return _back(request, "error", _SAID["state"])
            if (
                metadata.get("authorization_response_iss_parameter_supported")
                and params.get("iss") != metadata["issuer"]
            ):  # RFC 9207: an answer meant for a login with another provider
                await app.framework.clear_state_data(request.session, params.get("state"))
                return _back(request, "error", _SAID["issuer"])
            error = params.get("error")
            if error is not None:
                await app.framework.clear_state_data(request.session, params.get("state"))
                if error == "access_denied":
                    return _back(request, "notice", _SAID["access_denied"])
                logger.info("demo: the provider declined a login: %.40r", error)
                return _back(request, "error", _SAID["declined"])
            # the visitor's address, so the token endpoint's limits count them, not us
            headers = {**DEFAULT_HEADERS, "X-Forwarded-For": context.client_address(request)}
            token = await app.authorize_access_token(request, headers=headers)
            claims = token.get("userinfo")  # the validated ID token's claims
            if not claims:
                raise ValueError("no ID token in the token response")
            info = await app.userinfo(token=token)
            if info["sub"] != claims["sub"]:  # OpenID Connect Core 5.3.2
                raise ValueError("userinfo is about another user than the ID token")
        except MismatchingStateError:
            return _back(request, "error", _SAID["state"])
        except _RP_FAULTS as exc:
            if _unavailable(exc):
                logger.warning("demo: the OpenID Connect provider did not answer: %r", exc)
                return _back(request, "error", UNAVAILABLE)
            logger.warning("demo: an OpenID Connect login was refused: %r", exc)
            return _back(request, "error", _SAID["unverified"])
        request.session.pop("request", None)  # a login with Telegram left unfinished
        request.session["oidc"] = {
            "user": _user(info),
            "access_token": token["access_token"],
            "refresh_token": token.get("refresh_token"),
        }
        return RedirectResponse(PAGE_PATH, status_code=303)

    async def revoke(self, grant: dict[str, Any]) -> None:
        """End the grant at the provider (RFC 7009): its refresh token takes the access
        tokens with it. Raises ServiceUnavailable when the provider failed, so the caller
        keeps the session and logging out can be retried."""
        token = grant.get("refresh_token") or grant.get("access_token")
        hint = "refresh_token" if grant.get("refresh_token") else "access_token"
        try:
            metadata = await self.app.load_server_metadata()
            async with AsyncOAuth2Client(
                client_id=self._id, client_secret=self._secret,
                revocation_endpoint_auth_method=self._method, timeout=_TIMEOUT,
            ) as client:
                response = await client.revoke_token(
                    metadata["revocation_endpoint"], token=token, token_type_hint=hint
                )
        except _RP_FAULTS as exc:
            logger.warning("demo: the OpenID Connect provider did not answer: %r", exc)
            raise ServiceUnavailable(UNAVAILABLE) from None
        if response.status_code != 200:
            logger.warning("demo: revoking a grant answered %d", response.status_code)
            raise ServiceUnavailable(UNAVAILABLE)


def _unavailable(exc: Exception) -> bool:
    """Whether the provider failed to answer (unreachable, 5xx, `unavailable`), rather
    than answered no."""
    if isinstance(exc, httpx2.TransportError):
        return True
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code >= 500
    return getattr(exc, "error", None) in ("unavailable", "temporarily_unavailable")


def _user(claims: dict[str, Any]) -> dict[str, Any]:
    """The userinfo claims as the page shows any user (the API's user record)."""
    return {
        "id": int(claims["telegram_id"]),
        "username": claims.get("preferred_username"),
        "first_name": claims.get("name"),
        "last_name": None,
        "language_code": claims.get("locale"),
    }


def _back(request: Request, kind: str, message: str) -> Response:
    """Back to the page, which shows `message` once (/demo/session) as a notice or error."""
    request.session["flash"] = {kind: message}
    return RedirectResponse(PAGE_PATH, status_code=303)


def relying_party(settings: Settings) -> RelyingParty | None:
    """The demo's OpenID Connect client, or None (no client for it, or a transport Authlib
    would refuse: the issuer is https://, or http:// on loopback, which Authlib 1.8 takes
    as secure; AUTHLIB_INSECURE_TRANSPORT is never needed nor set)."""
    client = demo_client(settings)
    if client is None or settings.oidc is None:
        return None
    if not is_secure_transport(settings.oidc.issuer + TOKEN_PATH):
        logger.warning("demo: Authlib takes %s as insecure: no OpenID Connect login",
                       settings.oidc.issuer)
        return None
    return RelyingParty(settings.oidc.issuer, client)


def routes(rp: RelyingParty, cookie: Middleware) -> list[BaseRoute]:
    """GET /demo/oidc/login and /demo/oidc/callback under the demo's session cookie. Each
    starts or ends a login, and no HEAD does that: HEAD is 405 on both."""
    login = Route(OIDC_LOGIN_PATH, rp.login, methods=["GET"], middleware=[cookie])
    callback = Route(CALLBACK_PATH, rp.callback, methods=["GET"], middleware=[cookie])
    for route in (login, callback):
        if route.methods:
            route.methods.discard("HEAD")
    return [login, callback]
