"""GET /demo: "Acme Shop", a pretend website whose visitors log in with tglogin.

It is what a website's backend does with the API. The browser talks only to
`/demo/...`; those routes call the API over HTTP from the server side, with
the first of API_KEYS, so no key reaches the browser. The visitor's state
(the pending login request's id, then their access token: this website's own
session) lives in a signed, HttpOnly cookie, so any API process can answer
any of the visitor's requests. Signed, not encrypted: visitors can read their
own token, never change it, and page scripts cannot read it at all. Mounted
only when DEMO_PAGE=1.

"Log in with OpenID Connect" makes it a relying party of this API's own provider, with
Authlib's Starlette client rather than hand-written OAuth: `/demo/oidc/login` sends the
browser to the authorization endpoint (found by discovery) with state, nonce and a PKCE
S256 challenge, which Authlib keeps in the same signed cookie (so the visitor can read
their own verifier and nonce, never change them); `/demo/oidc/callback` takes back only
a state this browser started, checks `iss` (RFC 9207), exchanges the code as a
confidential client, validates the ID token against the JWKS (signature, iss, aud,
exp, nonce, at_hash: Authlib with joserfc), and asks userinfo, whose `sub` must be the
ID token's. The visitor is then logged in to the shop: its own session, as after any
social login, until Log out revokes the refresh token (and with it the access token,
RFC 7009). Every fault there ends on /demo with a message, never a 500.

The client is one the operator gave the provider (OIDC_CLIENTS): the first whose
redirect URIs include this API's `<OIDC_ISSUER>/demo/oidc/callback` (`make run` adds
one, `acme-demo`, when no clients are configured). Without one the page offers no
OpenID Connect button.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
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
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api_worker import context
from api_worker.auth import API_KEY_HEADER
from api_worker.body import json_object
from api_worker.errors import ApiError, InvalidRequest, NotFound
from api_worker.oidc import DISCOVERY_PATH, TOKEN_PATH
from api_worker.sandbox_link import sandbox_link
from shared.hashing import digest
from shared.settings import OidcClient, Settings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "demo_static"
COOKIE = "acme_session"
PAGE_PATH = "/demo"
OIDC_LOGIN_PATH = "/demo/oidc/login"
CALLBACK_PATH = "/demo/oidc/callback"  # after the issuer: the demo client's redirect URI
OIDC_SCOPE = "openid profile"
VIA_OIDC = "openid_connect"  # /demo/session's `via` for a login through OpenID Connect
# Authlib logs PKCE verifiers at DEBUG, its HTTP client request details: never shown
_QUIET_LOGGERS = ("authlib", "httpx2", "httpcore2")
# one long poll of the page; the API allows up to 30 s
WAIT_SECONDS = 25
_TIMEOUT = 10.0  # seconds for any other call to the API
_NO_STORE = {"Cache-Control": "no-store"}
# where to reach the API when it listens on every address: its own family's loopback
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
# the page loads nothing from elsewhere and is never framed
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    **_NO_STORE,
}
_FRIENDLY = {
    "invalid_code": "That code didn't work: it may be mistyped, expired or already used. "
    "Ask the bot for a new one with /code.",
    "invalid_request": "Please enter the code the bot sent you.",
    "unavailable": "Logging in is temporarily unavailable. Please try again in a moment.",
    "unauthorized": "This website is not allowed to use the login service (check API_KEYS).",
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


class DemoError(ApiError):
    """An error of the demo's own routes, with a message meant for the visitor."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error = status, error


# -- calling the API from the server side --------------------------------------------------


def _api_base(request: Request) -> str:
    """The API's own address: the port this request came in on (the real one behind
    a proxy or PORT), over loopback when the API listens on every interface, so
    uvicorn trusts the X-Forwarded-For we send (its default trusts 127.0.0.1 and
    ::1); IPv6 addresses in brackets."""
    settings = context.settings(request)
    host, port = settings.api_host, settings.api_port
    server = request.scope.get("server")
    if server and server[1]:  # None for a unix socket
        port = int(server[1])
        if host not in _WILDCARDS:
            host = str(server[0])
    host = _WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _call(
    request: Request,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    params: dict[str, int] | None = None,
    seconds: float = _TIMEOUT,
) -> httpx.Response:
    headers = {"X-Forwarded-For": context.client_address(request)}  # limits per visitor
    keys = context.settings(request).api_keys
    if keys:
        headers[API_KEY_HEADER] = keys[0].key.reveal()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with httpx.AsyncClient(base_url=_api_base(request), timeout=seconds) as client:
            return await client.request(method, path, json=body, headers=headers, params=params)
    except httpx.HTTPError as exc:
        logger.warning("demo: the API did not answer %s %s: %r", method, path, exc)
        raise DemoError(503, "unavailable", _FRIENDLY["unavailable"]) from None


def _failure(response: httpx.Response) -> DemoError:
    """The API's error as something to show the visitor; never its raw text."""
    try:
        error = str(response.json().get("error", "internal"))
    except ValueError:
        error = "internal"
    if error == "rate_limited":
        wait = response.headers.get("Retry-After", "a few")
        message = f"Too many wrong codes from here. Please try again in {wait} seconds."
    else:
        message = _FRIENDLY.get(error, "Something went wrong on our side. Please try again.")
    status = response.status_code if response.status_code in (400, 429, 503) else 502
    return DemoError(status, error, message)


async def _json_body(request: Request) -> dict[str, Any]:
    # a JSON content type cannot be sent cross-site without CORS: no form can forge these
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise InvalidRequest("Send the request as application/json.")
    return await json_object(request)


def _ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_NO_STORE)


def _logged_out(rp: RelyingParty | None, **said: str) -> JSONResponse:
    """No one logged in; where a login through OpenID Connect starts, if the demo has one."""
    return _ok({"logged_in": False, **({"oidc_login": OIDC_LOGIN_PATH} if rp else {}), **said})


# -- routes ---------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


async def session(rp: RelyingParty | None, request: Request) -> Response:
    """Who is logged in on this website; a token revoked elsewhere ends the session. Also
    the message a login through OpenID Connect left (once), and where that login starts
    when the demo has a client."""
    flash = request.session.pop("flash", None)
    said = {k: v for k, v in flash.items() if k in ("notice", "error")} if flash else {}
    oidc = request.session.get("oidc")
    if isinstance(oidc, dict):
        return _ok({"logged_in": True, "user": oidc["user"], "via": VIA_OIDC, **said})
    token = request.session.get("token")
    if not isinstance(token, str):
        return _logged_out(rp, **said)
    response = await _call(request, "GET", "/v1/me", token=token)
    if response.status_code == 401 and response.json().get("error") == "invalid_token":
        request.session.pop("token", None)
        return _logged_out(rp, notice="Your session has ended. Please log in again.")
    if response.status_code != 200:
        raise _failure(response)
    return _ok({"logged_in": True, "user": response.json()["user"]})


async def start_telegram(request: Request) -> Response:
    await _json_body(request)
    response = await _call(request, "POST", "/v1/login-requests", body={})
    if response.status_code != 201:
        if response.status_code == 503:
            raise DemoError(
                503, "unavailable", "Logging in with Telegram is not available right now "
                "(is the bot running?). Please try again in a moment, or use a code."
            )
        raise _failure(response)
    created = response.json()
    request.session["request"] = created["id"]
    return _ok(
        {
            "deep_link": created["deep_link"],
            "start_command": created["start_command"],
            "expires_in": created["expires_in"],
            "sandbox_link": await sandbox_link(context.settings(request), created["deep_link"]),
        }
    )


async def wait_telegram(request: Request) -> Response:
    """One long poll: the login request's status once it changes, or after WAIT_SECONDS."""
    request_id = request.session.get("request")
    if not isinstance(request_id, str):
        raise NotFound("No login is in progress.")
    response = await _call(
        request, "GET", f"/v1/login-requests/{quote(request_id, safe='')}",
        params={"wait": WAIT_SECONDS}, seconds=WAIT_SECONDS + _TIMEOUT,
    )
    if response.status_code == 404:
        request.session.pop("request", None)
        return _ok({"status": "expired"})
    if response.status_code != 200:
        raise _failure(response)
    result = response.json()
    status = result["status"]
    if status == "approved":
        request.session.pop("request", None)
        request.session["token"] = result["access_token"]
        return _ok({"status": "approved", "user": result["user"]})
    if status == "denied":
        request.session.pop("request", None)
        return _ok({"status": "denied"})
    return _ok({"status": "pending", "expires_in": result.get("expires_in")})


async def login_code(request: Request) -> Response:
    code = (await _json_body(request)).get("code")
    if not isinstance(code, str) or not code.strip():
        raise DemoError(400, "invalid_request", _FRIENDLY["invalid_request"])
    response = await _call(request, "POST", "/v1/codes/redeem", body={"code": code})
    if response.status_code != 200:
        raise _failure(response)
    redeemed = response.json()
    request.session.pop("request", None)
    request.session["token"] = redeemed["access_token"]
    return _ok({"logged_in": True, "user": redeemed["user"]})


async def logout(rp: RelyingParty | None, request: Request) -> Response:
    """Revoke the access token at the API (or the OpenID Connect grant at the provider),
    then forget it."""
    await _json_body(request)
    oidc = request.session.get("oidc")
    if isinstance(oidc, dict) and rp is not None:
        await rp.revoke(oidc)  # raises, keeping the session, when the provider failed
    token = request.session.get("token")
    if isinstance(token, str):
        response = await _call(request, "POST", "/v1/tokens/revoke", token=token)
        if response.status_code not in (204, 401):  # 401: already revoked or expired
            raise _failure(response)  # the token stays, so logging out can be retried
    request.session.clear()
    return _logged_out(rp)


# -- Log in with OpenID Connect ---------------------------------------------------------------


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
            return _back(request, "error", _FRIENDLY["unavailable"])
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
                return _back(request, "error", _FRIENDLY["state"])
            if (
                metadata.get("authorization_response_iss_parameter_supported")
                and params.get("iss") != metadata["issuer"]
            ):  # RFC 9207: an answer meant for a login with another provider
                await app.framework.clear_state_data(request.session, params.get("state"))
                return _back(request, "error", _FRIENDLY["issuer"])
            error = params.get("error")
            if error is not None:
                await app.framework.clear_state_data(request.session, params.get("state"))
                if error == "access_denied":
                    return _back(request, "notice", _FRIENDLY["access_denied"])
                logger.info("demo: the provider declined a login: %.40r", error)
                return _back(request, "error", _FRIENDLY["declined"])
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
            return _back(request, "error", _FRIENDLY["state"])
        except _RP_FAULTS as exc:
            if _unavailable(exc):
                logger.warning("demo: the OpenID Connect provider did not answer: %r", exc)
                return _back(request, "error", _FRIENDLY["unavailable"])
            logger.warning("demo: an OpenID Connect login was refused: %r", exc)
            return _back(request, "error", _FRIENDLY["unverified"])
        request.session.pop("request", None)
        request.session["oidc"] = {
            "user": _user(info),
            "access_token": token["access_token"],
            "refresh_token": token.get("refresh_token"),
        }
        return RedirectResponse(PAGE_PATH, status_code=303)

    async def revoke(self, grant: dict[str, Any]) -> None:
        """End the grant at the provider (RFC 7009): its refresh token takes the access
        tokens with it."""
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
            raise DemoError(503, "unavailable", _FRIENDLY["unavailable"]) from None
        if response.status_code != 200:
            logger.warning("demo: revoking a grant answered %d", response.status_code)
            raise DemoError(503, "unavailable", _FRIENDLY["unavailable"])


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
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return RelyingParty(settings.oidc.issuer, client)


def routes(settings: Settings) -> list[BaseRoute]:
    """The demo's routes; its cookie is signed with a key derived from AUTH_SECRET."""
    cookie = Middleware(
        SessionMiddleware,
        secret_key=digest(settings.auth_secret, "demo-session-cookie", "acme"),
        session_cookie=COOKIE,
        max_age=settings.token_ttl_seconds,
        path="/demo",
        same_site="lax",
    )
    rp = relying_party(settings)
    api: list[tuple[str, Any, str]] = [
        ("/demo/session", partial(session, rp), "GET"),
        ("/demo/login/telegram", start_telegram, "POST"),
        ("/demo/login/telegram/wait", wait_telegram, "GET"),
        ("/demo/login/code", login_code, "POST"),
        ("/demo/logout", partial(logout, rp), "POST"),
    ]
    if rp is not None:
        api += [(OIDC_LOGIN_PATH, rp.login, "GET"), (CALLBACK_PATH, rp.callback, "GET")]
    built = [
        Route(path, view, methods=[method], middleware=[cookie]) for path, view, method in api
    ]
    for route in built[-2:] if rp is not None else []:
        if route.methods:
            route.methods.discard("HEAD")  # each starts or ends a login: no HEAD does that
    return [
        Route(PAGE_PATH, page, methods=["GET"]),
        *built,
        Mount("/demo/static", app=StaticFiles(directory=STATIC), name="demo-static"),
    ]
