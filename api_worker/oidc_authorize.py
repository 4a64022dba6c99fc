"""OpenID Connect: the authorization endpoint and its page.

`GET` (or `POST`, OpenID Connect Core 3.1.2.1) `/oauth/authorize` checks the request
in the order RFC 6749 4.1.2.1 sets: an unknown client or a redirect URI not registered
for it gets an error page, never a redirect (the URI cannot be trusted with anything);
every other fault goes back to the client's redirect URI as `error=...` with `state` and
`iss` (RFC 9207). A good request becomes a deep-link login request
(`Logins.create_authorization`, under the per-address limit of every login request) and
a page, in English or Russian (`ui_locales`, else the browser's Accept-Language), that
offers both ways in:
- the deep link, as a button, as a QR code for a phone when the page is on a desktop,
  and as the `/start` command to send the bot by hand; the bot names the client and the
  redirect URI's host and asks the user to pick, among three, the number the page
  shows (number matching: a phisher relaying the page cannot make the user approve
  without showing them the real number);
- a field for a code from `/code`, for a device without Telegram.

The page waits for the bot's decision without reloading: its script long-polls
`POST /oauth/authorize/wait` (woken through Redis the moment the bot decides, as the
API's own login requests are), then follows the redirect it is given: `code`, `state`,
`iss` on approval, `error=access_denied` on a denial or a wrong number. A typed code
goes to `POST /oauth/authorize/code`. Both take the page's request id in a JSON body
(never a form another site could post) and hand an approval over once.

What the request asked for (client, redirect URI, PKCE challenge, nonce, scope, state)
stays in Redis with it; the browser holds only the request id, 128 random bits that
Redis knows by a keyed hash.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api_worker import context
from api_worker.body import form_pairs, json_object
from api_worker.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from api_worker.oidc_texts import TEXTS, Lang
from api_worker.sandbox_link import sandbox_link
from api_worker.waiters import MAX_WAIT
from shared.logins import (
    Authorization,
    AuthorizationResult,
    CreatedAuthorization,
    NoBotUsername,
)
from shared.oidc_grants import InvalidGrant
from shared.settings import OidcClient, OidcSettings
from shared.store import RateLimited, Unavailable

logger = logging.getLogger(__name__)

PATH = "/oauth/authorize"
WAIT_PATH = "/oauth/authorize/wait"
CODE_PATH = "/oauth/authorize/code"
STATIC = Path(__file__).parent / "oidc_static"
MAX_STATE = 512  # characters; the client's value, kept with the request and sent back
MAX_NONCE = 255
SCOPES = ("openid", "profile")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
_PORT = re.compile(r"[1-9][0-9]{0,4}")
# the parameters whose faults cannot be sent back to the client (RFC 6749 4.1.2.1)
_UNREDIRECTABLE = ("client_id", "redirect_uri")
# OpenID Connect Core 6 and RFC 7591: parameters of features this provider does not offer
_NOT_SUPPORTED = {
    "request": "request_not_supported",
    "request_uri": "request_uri_not_supported",
    "registration": "registration_not_supported",
}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

class PageError(ApiError):
    """A fault that must not be redirected: shown to the user (or the calling program)."""


class UnknownClient(PageError):
    status, error = 400, "invalid_client"


class BadRedirect(PageError):
    status, error = 400, "invalid_request"


class Redirected(Exception):
    """A fault answered at the client's redirect URI (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


# -- checking the request ---------------------------------------------------------------------


def redirect_allowed(client: OidcClient, uri: str) -> bool:
    """Whether `uri` is one of the client's redirect URIs: compared exactly, except that a
    loopback one (`http://127.0.0.1`, `http://[::1]`, `http://localhost`) matches on any
    port, as a native app listens wherever the system lets it (RFC 8252 7.3)."""
    if uri in client.redirect_uris:
        return True
    loose = _loopback_without_port(uri)
    return loose is not None and any(
        _loopback_without_port(registered) == loose for registered in client.redirect_uris
    )


def _loopback_without_port(uri: str) -> str | None:
    """A loopback http:// URI with its port taken out, or None for any other."""
    if not uri.startswith("http://"):
        return None
    rest = uri[len("http://"):]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    host = "[::1]" if authority.startswith("[::1]") else authority.partition(":")[0]
    port = authority[len(host):]
    if host not in _LOOPBACK_HOSTS or "#" in tail:
        return None
    if port and not (port[0] == ":" and _PORT.fullmatch(port[1:]) and int(port[1:]) < 65536):
        return None
    return "http://" + host + tail


def _host(redirect_uri: str) -> str:
    """The site's host, as the bot shows it (IDNs stay in their xn-- spelling)."""
    return urlsplit(redirect_uri).hostname or ""


def _single(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The parameters and the names given more than once (RFC 6749 3.1 allows each once):
    a repeated client_id or redirect_uri is a page error, any other an `invalid_request`
    redirect."""
    params: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        if name in params:
            repeated.add(name)
        params[name] = value
    for name in _UNREDIRECTABLE:
        if name in repeated:
            raise BadRedirect(f"The parameter {name} is given more than once.")
    return params, sorted(repeated)


def _client_and_redirect(oidc: OidcSettings, params: Mapping[str, str]) -> tuple[OidcClient, str]:
    client = oidc.client(params.get("client_id", ""))
    if client is None:
        raise UnknownClient("There is no such client: check the client_id of the application.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise BadRedirect("The redirect_uri parameter is missing.")
    if not redirect_allowed(client, redirect_uri):
        raise BadRedirect(
            "The redirect_uri is not one registered for this client; nothing was sent to it."
        )
    return client, redirect_uri


def authorization(
    client: OidcClient, redirect_uri: str, params: Mapping[str, str], repeated: list[str]
) -> Authorization:
    """What a checked request asks for; `Redirected` for a fault the client should hear
    about (after its client and redirect URI were found good)."""
    if repeated:
        raise Redirected("invalid_request", "Repeated parameters: " + ", ".join(repeated))
    for name, error in _NOT_SUPPORTED.items():
        if name in params:
            raise Redirected(error, f"The {name} parameter is not supported.")
    response_type = params.get("response_type")
    if not response_type:
        raise Redirected("invalid_request", "The response_type parameter is missing.")
    if response_type != "code":
        raise Redirected("unsupported_response_type", "Only response_type=code is supported.")
    if params.get("response_mode", "query") != "query":
        raise Redirected("invalid_request", "Only response_mode=query is supported.")
    requested = params.get("scope", "").split()
    if "openid" not in requested:
        raise Redirected("invalid_scope", "The scope must include openid.")
    scope = " ".join(s for s in SCOPES if s in requested)  # others ignored (RFC 6749 3.3)
    challenge = params.get("code_challenge", "")
    if not challenge:
        raise Redirected("invalid_request", "PKCE is required: send a code_challenge (S256).")
    if params.get("code_challenge_method") != "S256":
        raise Redirected("invalid_request", "code_challenge_method must be S256.")
    if not _CHALLENGE.fullmatch(challenge):
        raise Redirected("invalid_request", "code_challenge is not an S256 challenge.")
    state, nonce = params.get("state"), params.get("nonce")
    if state is not None and len(state) > MAX_STATE:
        raise Redirected("invalid_request", f"state must be at most {MAX_STATE} characters.")
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise Redirected("invalid_request", f"nonce must be at most {MAX_NONCE} characters.")
    prompts = params.get("prompt", "").split()
    if "none" in prompts:
        if len(prompts) > 1:
            raise Redirected("invalid_request", "prompt=none cannot be combined.")
        # every login is a decision the user makes in Telegram: none happens silently
        raise Redirected("login_required", "The user must approve in Telegram.")
    return Authorization(
        client_id=client.client_id, client_name=client.name, host=_host(redirect_uri),
        redirect_uri=redirect_uri, code_challenge=challenge, nonce=nonce or None,
        scope=scope, state=state,
    )


def response_url(redirect_uri: str, issuer: str, params: Mapping[str, str | None]) -> str:
    """The redirect URI with the response's parameters and `iss` added to its query."""
    query = urlencode({**{k: v for k, v in params.items() if v is not None}, "iss": issuer})
    return redirect_uri + ("&" if urlsplit(redirect_uri).query else "?") + query


# -- the page ---------------------------------------------------------------------------------


def page_lang(request: Request, ui_locales: str | None = None) -> Lang:
    """Russian when `ui_locales` (OpenID Connect Core 3.1.2.1) or, failing it, the
    browser's Accept-Language prefers it among the page's languages; else English."""
    if ui_locales:
        for tag in ui_locales.split():
            primary = tag.split("-", 1)[0].lower()
            if primary in TEXTS:
                return "ru" if primary == "ru" else "en"
    best: tuple[float, Lang] = (0.0, "en")
    for position, item in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().split("-", 1)[0].lower()
        if primary not in TEXTS:
            continue
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                continue
        weight -= position * 1e-6  # equal weights: the first listed wins
        if weight > best[0]:
            best = (weight, "ru" if primary == "ru" else "en")
    return best[1]


def _texts(lang: Lang, **values: str) -> dict[str, str]:
    return {key: string.Template(text).safe_substitute(values)
            for key, text in TEXTS[lang].items()}


def _template(name: str) -> string.Template:
    return string.Template((STATIC / name).read_text(encoding="utf-8"))


_PAGE = _template("authorize.html")
_ERROR_PAGE = _template("error.html")
_STYLE = (STATIC / "authorize.css").read_text(encoding="utf-8")
_SCRIPT = (STATIC / "authorize.js").read_text(encoding="utf-8")


def _page_headers(nonce: str) -> dict[str, str]:
    """Nothing but its own inline style and script (by nonce) and calls to this origin;
    never framed (clickjacking the code field), no Referer to anywhere."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        **_NO_STORE,
    }


def _qr_svg(link: str) -> str:
    return str(segno.make(link, error="m").svg_inline(scale=4, border=2, dark="#111"))


def _relative(path: str) -> str:
    """`path` relative to the page's own URL (under whatever prefix a proxy serves the
    issuer at): /oauth/authorize/wait from /oauth/authorize is authorize/wait."""
    return path.removeprefix("/oauth/")


async def _page(
    request: Request, lang: Lang, created: CreatedAuthorization, authorization: Authorization,
    pairs: list[tuple[str, str]],
) -> Response:
    settings = context.settings(request)
    login = created.login
    texts = _texts(
        lang, client=authorization.client_name, host=authorization.host,
        bot=login.bot_username, minutes=str(max(1, login.expires_in // 60)),
    )
    nonce = secrets.token_urlsafe(16)
    sandbox = await sandbox_link(settings, login.deep_link)
    sandbox_html = (
        f'<p><a class="sandbox" href="{html.escape(sandbox)}" target="_blank" '
        f'rel="noopener">{html.escape(texts["sandbox"])}</a></p>' if sandbox else ""
    )
    shown = {key: html.escape(value) for key, value in texts.items()}
    body = _PAGE.substitute(
        shown,
        lang=lang,
        nonce=nonce,
        style=_STYLE,
        script=_SCRIPT,
        # the script's strings, and where it calls: JSON inside a non-executed script tag
        # (`<` escaped, so no text in it can close the tag)
        config=json.dumps(
            {"id": login.id, "wait": _relative(WAIT_PATH), "code": _relative(CODE_PATH),
             "texts": texts, "again": "?" + urlencode(pairs)},
            ensure_ascii=False,
        ).replace("<", "\\u003c"),
        number_value=str(created.match),
        deep_link=html.escape(login.deep_link),
        command_label=shown["command"],
        command_text=html.escape(login.start_command),
        qr=_qr_svg(login.deep_link),
        qr_hint=shown["qr"],
        sandbox=sandbox_html,
    )
    return Response(body, media_type="text/html; charset=utf-8", headers=_page_headers(nonce))


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, exc: ApiError, lang: Lang) -> Response:
    """A fault that is not redirected: a page for a browser, the JSON error model for a
    program (Accept without text/html)."""
    if not _wants_html(request):
        return JSONResponse({"error": exc.error, "message": exc.message},
                            status_code=exc.status, headers={**exc.headers, **_NO_STORE})
    nonce = secrets.token_urlsafe(16)
    texts = _texts(lang)
    body = _ERROR_PAGE.substitute(
        lang=lang, nonce=nonce, style=_STYLE, title=html.escape(texts["error_title"]),
        message=html.escape(exc.message), error=html.escape(exc.error),
    )
    return Response(body, status_code=exc.status, media_type="text/html; charset=utf-8",
                    headers={**exc.headers, **_page_headers(nonce)})


# -- endpoints --------------------------------------------------------------------------------


async def authorize(request: Request) -> Response:
    """The authorization endpoint: a page, an error page, or a redirect with an error."""
    oidc = context.settings(request).oidc
    assert oidc is not None  # mounted only with OIDC on
    if request.method == "POST":
        try:
            pairs = await form_pairs(request)
        except ApiError as exc:
            return error_page(request, exc, page_lang(request))
    else:
        pairs = request.query_params.multi_items()
    try:
        params, repeated = _single(pairs)
        lang = page_lang(request, params.get("ui_locales"))
        client, redirect_uri = _client_and_redirect(oidc, params)
    except PageError as exc:
        return error_page(request, exc, page_lang(request))
    try:
        asked = authorization(client, redirect_uri, params, repeated)
    except Redirected as exc:
        location = response_url(redirect_uri, oidc.issuer, {
            "error": exc.error, "error_description": exc.description,
            "state": params.get("state"),
        })
        return Response(status_code=303, headers={"Location": location, **_NO_STORE})
    if request.method == "HEAD":  # HEAD never changes state: no request is made for it
        return Response(media_type="text/html; charset=utf-8", headers=_NO_STORE)
    try:
        created = await context.logins(request).create_authorization(
            asked, context.client_address(request)
        )
    except RateLimited as exc:
        return error_page(request, TooManyRequests(
            f"Too many logins started from this address; try again in {exc.retry_after} s.",
            {"Retry-After": str(exc.retry_after)},
        ), lang)
    except NoBotUsername:
        return error_page(request, ServiceUnavailable(
            "The login bot has not started yet; try again shortly."), lang)
    except Unavailable:
        return error_page(request, ServiceUnavailable(
            "Logging in is temporarily unavailable; try again shortly."), lang)
    logger.info("authorization page for client %s", client.client_id)
    # "start again" loads the page anew, as a GET, whichever way this one came
    return await _page(request, lang, created, asked, pairs)


def _page_id(body: Mapping[str, Any]) -> str:
    login_id = body.get("id")
    if not isinstance(login_id, str) or not login_id:
        raise InvalidRequest('"id" must be the page\'s request id.')
    return login_id


def _wait_seconds(body: Mapping[str, Any]) -> int:
    wait = body.get("wait", 0)
    if not isinstance(wait, int) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise InvalidRequest(f'"wait" must be a whole number of seconds from 0 to {MAX_WAIT}.')
    return wait


async def _finish(request: Request, result: AuthorizationResult) -> str:
    """The redirect that ends an approved or denied authorization."""
    oidc = context.settings(request).oidc
    assert oidc is not None
    asked = result.authorization
    if result.status == "approved":
        assert result.user is not None
        try:
            code = await context.oidc_grants(request).create(
                asked.client_id, asked.redirect_uri, asked.code_challenge, asked.nonce,
                result.user, int(time.time()), asked.scope, generation=result.generation,
            )
        except InvalidGrant:  # the user logged out of everything since approving
            logger.info("authorization approved, then ended by the user's /logout")
        else:
            logger.info("authorization approved for client %s", asked.client_id)
            return response_url(asked.redirect_uri, oidc.issuer,
                                {"code": code, "state": asked.state})
    return response_url(asked.redirect_uri, oidc.issuer, {
        "error": "access_denied", "error_description": "The user denied the login.",
        "state": asked.state,
    })


async def wait(request: Request) -> Response:
    """The page's long poll: pending, or the redirect that ends it (once)."""
    body = await json_object(request)
    login_id, seconds = _page_id(body), _wait_seconds(body)
    logins, waiters = context.logins(request), context.waiters(request)
    result = await waiters.hold(
        logins.id_hash(login_id), lambda: logins.poll_authorization(login_id),
        lambda found: found is not None and found.status == "pending", seconds,
    )
    if result is None:
        raise NotFound("This login page has expired or was answered already.")
    if result.status == "pending":
        return JSONResponse({"status": "pending", "expires_in": result.expires_in},
                            headers=_NO_STORE)
    return JSONResponse({"status": result.status, "redirect": await _finish(request, result)},
                        headers=_NO_STORE)


async def typed_code(request: Request) -> Response:
    """A code from /code typed on the page: the redirect with an authorization code."""
    body = await json_object(request)
    login_id = _page_id(body)
    code = body.get("code")
    if not isinstance(code, str) or not code.strip():
        raise InvalidRequest('"code" must be the code the bot sent.')
    logins = context.logins(request)
    pending = await logins.poll_authorization(login_id)
    if pending is None or pending.status != "pending":
        # answered in Telegram meanwhile (the page's wait brings that), or expired
        raise NotFound("This login page has expired or was answered already.")
    try:
        user, generation = await context.store(request).codes.take(
            code, context.client_address(request)
        )
    except RateLimited as exc:
        raise TooManyRequests(
            f"Too many failed codes from this address; try again in {exc.retry_after} s.",
            {"Retry-After": str(exc.retry_after)},
        ) from None
    asked = await logins.take_authorization(login_id)
    if asked is None:
        raise NotFound("This login page has expired or was answered already.")
    result = AuthorizationResult(status="approved", authorization=asked, user=user,
                                 generation=generation)
    return JSONResponse({"status": "approved", "redirect": await _finish(request, result)},
                        headers=_NO_STORE)


def routes(oidc: OidcSettings) -> list[BaseRoute]:
    return [
        Route(PATH, authorize, methods=["GET", "POST"]),
        Route(WAIT_PATH, wait, methods=["POST"]),
        Route(CODE_PATH, typed_code, methods=["POST"]),
    ]
