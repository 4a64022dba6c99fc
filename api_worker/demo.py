"""GET /demo: "Acme Shop", a pretend website whose visitors log in with tglogin.

It is what a website's backend does with the API. The browser talks only to
`/demo/...`; those routes call the API over HTTP from the server side, with
the first of API_KEYS, so no key reaches the browser. The visitor's state
(the pending login request's id, then their access token: this website's own
session) lives in a signed, HttpOnly cookie, so any API process can answer
any of the visitor's requests. Signed, not encrypted: visitors can read their
own token, never change it, and page scripts cannot read it at all. Mounted
only when DEMO_PAGE=1.

"Confirm your order" and the shop's webhook receiver are `api_worker.demo_events`.

"Log in with OpenID Connect" makes it a relying party of this API's own provider
(`api_worker.demo_oidc`, mounted here under the same cookie when the provider has a
client for the demo); /demo/session and Log out serve both kinds of login.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api_worker import context, demo_oidc
from api_worker.auth import API_KEY_HEADER
from api_worker.body import json_object
from api_worker.demo_oidc import CALLBACK_PATH as CALLBACK_PATH  # re-exported: tests use it
from api_worker.demo_oidc import (
    OIDC_LOGIN_PATH,
    PAGE_PATH,
    UNAVAILABLE,
    VIA_OIDC,
    RelyingParty,
    relying_party,
)
from api_worker.demo_oidc import demo_client as demo_client  # re-exported: tests use it
from api_worker.errors import ApiError, InvalidRequest, NotFound
from api_worker.sandbox_link import sandbox_link
from shared.hashing import digest
from shared.settings import Settings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "demo_static"
COOKIE = "acme_session"
# one long poll of the page; the API allows up to 30 s
WAIT_SECONDS = 25
API_TIMEOUT = 10.0  # seconds for any other call to the API
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
    "unavailable": UNAVAILABLE,  # the same words when the provider does not answer
    "unauthorized": "This website is not allowed to use the login service (check API_KEYS).",
}


class DemoError(ApiError):
    """An error of the demo's own routes, with a message meant for the visitor."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error = status, error


# -- calling the API from the server side (api_worker.demo_events too) -------------------


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


async def call_api(
    request: Request,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    params: dict[str, int] | None = None,
    seconds: float = API_TIMEOUT,
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


def failure(response: httpx.Response) -> DemoError:
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


async def json_body(request: Request) -> dict[str, Any]:
    # a JSON content type cannot be sent cross-site without CORS: no form can forge these
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise InvalidRequest("Send the request as application/json.")
    return await json_object(request)


def ok(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_NO_STORE)


def _logged_out(rp: RelyingParty | None, **said: str) -> JSONResponse:
    """No one logged in; where a login through OpenID Connect starts, if the demo has one."""
    return ok({"logged_in": False, **({"oidc_login": OIDC_LOGIN_PATH} if rp else {}), **said})


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
        return ok({"logged_in": True, "user": oidc["user"], "via": VIA_OIDC, **said})
    token = request.session.get("token")
    if not isinstance(token, str):
        return _logged_out(rp, **said)
    response = await call_api(request, "GET", "/v1/me", token=token)
    if response.status_code == 401 and response.json().get("error") == "invalid_token":
        request.session.pop("token", None)
        return _logged_out(rp, notice="Your session has ended. Please log in again.")
    if response.status_code != 200:
        raise failure(response)
    return ok({"logged_in": True, "user": response.json()["user"]})


async def start_telegram(request: Request) -> Response:
    await json_body(request)
    response = await call_api(request, "POST", "/v1/login-requests", body={})
    if response.status_code != 201:
        if response.status_code == 503:
            raise DemoError(
                503, "unavailable", "Logging in with Telegram is not available right now "
                "(is the bot running?). Please try again in a moment, or use a code."
            )
        raise failure(response)
    created = response.json()
    request.session["request"] = created["id"]
    return ok(
        {
            "deep_link": created["deep_link"],
            "start_command": created["start_command"],
            "expires_in": created["expires_in"],
            "sandbox_link": await sandbox_link(context.settings(request), created["deep_link"]),
        }
    )


async def long_poll(
    request: Request, session_key: str, path: str, nothing: str
) -> dict[str, Any] | None:
    """One long poll (`wait=WAIT_SECONDS`) of the API's `path`/<the id the session keeps
    under `session_key`>: its JSON, or None once the API no longer knows it (404; the
    session forgets it). NotFound(`nothing`) when the session keeps no id."""
    kept = request.session.get(session_key)
    if not isinstance(kept, str):
        raise NotFound(nothing)
    response = await call_api(
        request, "GET", f"{path}/{quote(kept, safe='')}",
        params={"wait": WAIT_SECONDS}, seconds=WAIT_SECONDS + API_TIMEOUT,
    )
    if response.status_code == 404:
        request.session.pop(session_key, None)
        return None
    if response.status_code != 200:
        raise failure(response)
    result: dict[str, Any] = response.json()
    return result


async def wait_telegram(request: Request) -> Response:
    """One long poll: the login request's status once it changes, or after WAIT_SECONDS."""
    result = await long_poll(request, "request", "/v1/login-requests",
                             "No login is in progress.")
    if result is None:
        return ok({"status": "expired"})
    status = result["status"]
    if status == "approved":
        request.session.pop("request", None)
        request.session["token"] = result["access_token"]
        return ok({"status": "approved", "user": result["user"]})
    if status == "denied":
        request.session.pop("request", None)
        return ok({"status": "denied"})
    return ok({"status": "pending", "expires_in": result.get("expires_in")})


async def login_code(request: Request) -> Response:
    code = (await json_body(request)).get("code")
    if not isinstance(code, str) or not code.strip():
        raise DemoError(400, "invalid_request", _FRIENDLY["invalid_request"])
    response = await call_api(request, "POST", "/v1/codes/redeem", body={"code": code})
    if response.status_code != 200:
        raise failure(response)
    redeemed = response.json()
    request.session.pop("request", None)
    request.session["token"] = redeemed["access_token"]
    return ok({"logged_in": True, "user": redeemed["user"]})


async def logout(rp: RelyingParty | None, request: Request) -> Response:
    """Revoke the access token at the API (or the OpenID Connect grant at the provider),
    then forget it."""
    await json_body(request)
    oidc = request.session.get("oidc")
    if isinstance(oidc, dict) and rp is not None:
        await rp.revoke(oidc)  # raises, keeping the session, when the provider failed
    token = request.session.get("token")
    if isinstance(token, str):
        response = await call_api(request, "POST", "/v1/tokens/revoke", token=token)
        if response.status_code not in (204, 401):  # 401: already revoked or expired
            raise failure(response)  # the token stays, so logging out can be retried
    request.session.clear()
    return _logged_out(rp)


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
    rp = relying_party(settings)  # None: no OpenID Connect login, and no routes for one
    api: list[tuple[str, Any, str]] = [
        ("/demo/session", partial(session, rp), "GET"),
        ("/demo/login/telegram", start_telegram, "POST"),
        ("/demo/login/telegram/wait", wait_telegram, "GET"),
        ("/demo/login/code", login_code, "POST"),
        ("/demo/logout", partial(logout, rp), "POST"),
    ]
    built: list[BaseRoute] = [
        Route(path, view, methods=[method], middleware=[cookie]) for path, view, method in api
    ]
    if rp is not None:
        built += demo_oidc.routes(rp, cookie)
    from api_worker import demo_events  # it builds on this module's calls to the API

    built += demo_events.routes(settings, cookie)
    return [
        Route(PAGE_PATH, page, methods=["GET"]),
        *built,
        Mount("/demo/static", app=StaticFiles(directory=STATIC), name="demo-static"),
    ]
