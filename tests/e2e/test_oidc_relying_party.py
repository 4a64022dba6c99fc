"""A real relying party logs in through the whole system (issue 9 item 7): Authlib's OAuth 2.0
client for httpx, given its registration and the endpoints of the discovery document, against
an API process and a bot process on one Redis with the Telegram sandbox. The issuer is the
API process's own loopback URL.

The test is the browser and the user: it opens the authorization URL Authlib made, reads the
page (its number, its `/start` command, its request id), answers in the sandbox (the page's
number, a wrong one, Deny, or `/code` and the code typed on the page) and follows the page's
long poll to the redirect, as the page's script does. From the redirect on it is Authlib's:
the code exchange with PKCE, refresh, revocation, the bearer call to userinfo.

What Authlib checks itself, and what the test adds (Authlib 1.6+ does JOSE with joserfc;
its own `authlib.jose` is deprecated and not used):
- discovery: Authlib's plain client does none; the test reads the document and checks it
  names the issuer it came from (OpenID Connect Discovery 4.3). Authlib's metadata
  validation wants https, so it runs in tests/api_worker/test_oidc.py instead.
- PKCE: Authlib makes the S256 challenge of the verifier and sends the verifier.
- `state`: Authlib's `fetch_token(authorization_response=..., state=...)` refuses another.
- `iss` in the redirect (RFC 9207): Authlib's client does not look at it; checked here.
- the ID token: Authlib's plain httpx client has no `parse_id_token` (its framework
  integrations' OpenID mixin has); `validated_id_token` does what that one does: the key
  set from `jwks_uri` and the signature by joserfc, only with the algorithms the discovery
  document names, then Authlib's `CodeIDToken` with `iss` from the document (exp, iat,
  nonce, at_hash); and it adds `aud`, which parse_id_token checks only by way of `azp`.
- an error in the redirect: Authlib's plain client does not read `error` (and
  `fetch_token(authorization_response=...)` of a redirect without a code falls back to a
  client_credentials request, which the provider refuses `unsupported_grant_type`); the
  test reads `error`, `state` and `iss`, and shows that Authlib told it is a code grant
  refuses to exchange a redirect without a code.
- token endpoint errors (`invalid_grant`): Authlib raises them as `OAuthError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc6749.errors import MissingCodeException
from authlib.oidc.core import CodeIDToken, UserInfo
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, Message, buttons, code_of
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.oidc import (
    CLI,
    SHOP,
    SHOP_SECRET,
    AuthorizationPage,
    authorization_page,
    oidc_env,
    query_of,
)

DISCOVERY_PATH = "/.well-known/openid-configuration"
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "en"}
SHOP_CALLBACK = SHOP["redirect_uris"][0]
DECIDED_WITHIN = 60.0  # seconds for the page to learn the bot's decision (a deadline)
LEEWAY = 120  # seconds of clock skew the ID token's times may show, as Authlib's default
ANN_PROFILE = {
    "sub": str(ANN["id"]), "telegram_id": ANN["id"], "name": "Ann",
    "preferred_username": "ann", "locale": "en",
}


@dataclass
class System:
    api: ApiProcess
    bot: BotProcess
    issuer: str


@pytest.fixture
def system(start_api: ApiStarter, start_bot: BotStarter, tmp_path: Path) -> System:
    """A bot worker and an API worker whose issuer is its own loopback URL; clients: the shop
    (confidential, https redirect) and the CLI (public, loopback redirects on any port)."""
    bot = start_bot()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = oidc_env(tmp_path, [SHOP, CLI])
    api = start_api(
        port=port, AUTH_SECRET=AUTH_SECRET, OIDC_ISSUER=issuer,
        OIDC_CLIENTS=env["OIDC_CLIENTS"], OIDC_SIGNING_KEY_FILE=env["OIDC_SIGNING_KEY_FILE"],
    )
    return System(api, bot, issuer)


# -- the relying party: Authlib, as an application uses it -----------------------------------


@dataclass
class Login:
    """What an application keeps (in its session, usually) between sending the user to the
    provider and their coming back."""

    url: str
    state: str
    nonce: str
    verifier: str


def discover(issuer: str) -> dict[str, Any]:
    """The discovery document, which must name the issuer it was fetched from (OpenID Connect
    Discovery 4.3). (Authlib's metadata validation wants https: see tests/api_worker.)"""
    response = httpx.get(issuer + DISCOVERY_PATH, timeout=10)
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()
    assert metadata["issuer"] == issuer
    assert metadata["authorization_response_iss_parameter_supported"] is True
    return metadata


def relying_party(
    metadata: dict[str, Any], client_id: str, redirect_uri: str, secret: str | None = None,
    auth_method: str | None = None,
) -> OAuth2Client:
    """Authlib's client of one registration; its default client authentication is
    client_secret_basic with a secret, none without."""
    return OAuth2Client(
        client_id=client_id, client_secret=secret, token_endpoint_auth_method=auth_method,
        revocation_endpoint_auth_method=auth_method, scope="openid profile",
        redirect_uri=redirect_uri, code_challenge_method="S256",
        token_endpoint=metadata["token_endpoint"], timeout=15,
    )


def begin(client: OAuth2Client, metadata: dict[str, Any]) -> Login:
    """The authorization URL with PKCE (S256), a state (Authlib's) and a nonce."""
    verifier, nonce = generate_token(64), generate_token(24)
    url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    query = query_of(url)
    assert query["code_challenge_method"] == "S256" and query["nonce"] == nonce
    assert "code_verifier" not in query
    return Login(url=url, state=state, nonce=nonce, verifier=verifier)


def exchange(client: OAuth2Client, metadata: dict[str, Any], login: Login,
             redirect: str) -> dict[str, Any]:
    """The redirect back: `iss` checked (RFC 9207), then Authlib's code exchange, which checks
    `state` and sends the verifier."""
    assert query_of(redirect)["iss"] == metadata["issuer"]
    token: dict[str, Any] = client.fetch_token(
        metadata["token_endpoint"], authorization_response=redirect, state=login.state,
        code_verifier=login.verifier,
    )
    assert token["token_type"] == "Bearer" and token["scope"] == "openid profile"
    return token


def validated_id_token(client: OAuth2Client, metadata: dict[str, Any], token: dict[str, Any],
                       nonce: str | None) -> CodeIDToken:
    """The ID token of `token`, validated as Authlib's own `parse_id_token` does (the key set
    from `jwks_uri`, the algorithms the provider names, `iss`; Authlib's CodeIDToken for
    exp, iat, nonce and at_hash) and `aud` as this client."""
    jwks = client.request("GET", metadata["jwks_uri"], withhold_token=True)
    assert jwks.status_code == 200, jwks.text
    decoded = jwt.decode(
        token["id_token"], KeySet.import_key_set(jwks.json()),
        registry=JWSRegistry(algorithms=metadata["id_token_signing_alg_values_supported"]),
    )
    claims = CodeIDToken(
        decoded.claims, decoded.header,
        {"iss": {"essential": True, "value": metadata["issuer"]},
         "aud": {"essential": True, "value": client.client_id},
         "sub": {"essential": True}},
        {"nonce": nonce, "client_id": client.client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=LEEWAY)
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["kid"] in {key["kid"] for key in jwks.json()["keys"]}
    return claims


def userinfo(client: OAuth2Client, metadata: dict[str, Any]) -> httpx2.Response:
    """The userinfo endpoint called with the client's current access token (Bearer)."""
    response: httpx2.Response = client.get(metadata["userinfo_endpoint"])
    return response


def logged_in_as_ann(client: OAuth2Client, metadata: dict[str, Any], token: dict[str, Any],
                     nonce: str | None) -> CodeIDToken:
    """The ID token validated, and userinfo: both Ann, by her Telegram id."""
    claims = validated_id_token(client, metadata, token, nonce)
    assert claims["nonce"] == nonce
    assert {k: claims[k] for k in ANN_PROFILE} == ANN_PROFILE
    assert abs(claims["auth_time"] - time.time()) < LEEWAY
    response = userinfo(client, metadata)
    assert response.status_code == 200, response.text
    assert UserInfo(response.json()) == ANN_PROFILE  # sub: the ID token's
    return claims


# -- the browser and the user -----------------------------------------------------------------


def open_page(url: str) -> AuthorizationPage:
    """The authorization page, as a browser loads it (once the bot has said its username)."""

    def loaded() -> httpx.Response | None:
        response = httpx.get(url, headers=BROWSER, timeout=10)
        return None if response.status_code == 503 else response

    response = wait_until(loaded, timeout=20,
                          what="the authorization page (503 until the bot has started)")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return authorization_page(str(response.url), response.text)


def page_outcome(page: AuthorizationPage) -> dict[str, Any]:
    """The page script's long poll, to the decision: `{"status", "redirect"}`."""
    deadline = time.monotonic() + DECIDED_WITHIN
    while time.monotonic() < deadline:
        response = httpx.post(page.wait_url, json={"id": page.id, "wait": 25}, timeout=40)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "pending":
            return body
    raise AssertionError(f"no decision within {DECIDED_WITHIN} s")


def prompt_for(bot: BotProcess, page: AuthorizationPage, client: str, host: str) -> Message:
    """`/start <payload>` sent as Ann: the bot asks to log in to `client` at `host` and offers
    three numbers, one of them the page's, and Deny."""
    prompt = bot.ask(page.start_command, ANN)
    assert prompt["text"].startswith(f"Log in to {client} at {host}?"), prompt["text"]
    numbers = [int(b["text"]) for b in buttons(prompt) if b["text"].isdigit()]
    assert len(set(numbers)) == 3 and page.number in numbers, prompt
    return prompt


def tap(bot: BotProcess, prompt: Message, button: Callable[[dict[str, Any]], bool]) -> None:
    """Ann taps the prompt's first button for which `button` holds."""
    chosen = next(b for b in buttons(prompt) if button(b))
    bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], chosen["callback_data"], ANN,
                    bot.token)


def decided_in_telegram(system: System, login: Login, client: str, host: str,
                        button: Callable[[AuthorizationPage], Callable[[dict[str, Any]], bool]],
                        ) -> dict[str, Any]:
    """Open the page, wait on it as its script does, answer the prompt with `button`; the
    page's outcome."""
    page = open_page(login.url)
    prompt = prompt_for(system.bot, page, client, host)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(page_outcome, page)  # the page already waits when Ann taps
        tap(system.bot, prompt, button(page))
        return waiting.result(timeout=DECIDED_WITHIN + 30)


def the_number(page: AuthorizationPage) -> Callable[[dict[str, Any]], bool]:
    return lambda b: b["text"] == str(page.number)


def another_number(page: AuthorizationPage) -> Callable[[dict[str, Any]], bool]:
    return lambda b: b["text"].isdigit() and b["text"] != str(page.number)


def deny(page: AuthorizationPage) -> Callable[[dict[str, Any]], bool]:
    return lambda b: b["text"] == "Deny"


# -- the tests ---------------------------------------------------------------------------------


def test_a_confidential_client_logs_in_by_the_deep_link(system: System) -> None:
    metadata = discover(system.issuer)
    with relying_party(metadata, "shop", SHOP_CALLBACK, SHOP_SECRET) as client:  # Basic
        login = begin(client, metadata)

        outcome = decided_in_telegram(system, login, "Shop Example", "shop.example", the_number)
        assert outcome["status"] == "approved"
        redirect = outcome["redirect"]
        assert redirect.startswith(SHOP_CALLBACK + "?")
        assert query_of(redirect)["state"] == login.state

        token = exchange(client, metadata, login, redirect)
        logged_in_as_ann(client, metadata, token, login.nonce)


def test_a_public_client_logs_in_by_a_typed_code(system: System) -> None:
    metadata = discover(system.issuer)
    # RFC 8252 7.3: the app listens on whatever loopback port it got; registered without one
    callback = f"http://127.0.0.1:{free_port()}/callback"
    with relying_party(metadata, "cli", callback) as client:
        assert client.token_endpoint_auth_method == "none"
        login = begin(client, metadata)

        page = open_page(login.url)
        code = code_of(system.bot.ask("/code", ANN))
        typed = httpx.post(page.code_url, json={"id": page.id, "code": code}, timeout=10)
        assert typed.status_code == 200, typed.text
        redirect = typed.json()["redirect"]
        assert redirect.startswith(callback + "?")
        assert query_of(redirect)["state"] == login.state

        token = exchange(client, metadata, login, redirect)
        logged_in_as_ann(client, metadata, token, login.nonce)

        # the code is single use: a second exchange is refused and ends what the first issued
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(metadata["token_endpoint"], authorization_response=redirect,
                               state=login.state, code_verifier=login.verifier)
        assert refused.value.error == "invalid_grant"
        assert userinfo(client, metadata).status_code == 401


def test_refresh_rotates_and_revocation_ends_the_access_token(system: System) -> None:
    metadata = discover(system.issuer)
    with relying_party(metadata, "shop", SHOP_CALLBACK, SHOP_SECRET,
                       "client_secret_post") as client:
        login = begin(client, metadata)
        outcome = decided_in_telegram(system, login, "Shop Example", "shop.example", the_number)
        first = exchange(client, metadata, login, outcome["redirect"])
        original = logged_in_as_ann(client, metadata, first, login.nonce)

        # rotation: new tokens, and a new ID token of the same login (OpenID Connect Core
        # 12.2: the same iss, sub, aud and auth_time; no nonce)
        second = dict(client.refresh_token(metadata["token_endpoint"]))
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        renewed = validated_id_token(client, metadata, second, None)
        same = ("iss", "sub", "aud", "auth_time")
        assert {k: renewed[k] for k in same} == {k: original[k] for k in same}
        assert "nonce" not in renewed
        assert userinfo(client, metadata).json() == ANN_PROFILE

        # revoking the access token (RFC 7009) ends it at once
        revoked = client.revoke_token(metadata["revocation_endpoint"],
                                      token=second["access_token"],
                                      token_type_hint="access_token")
        assert revoked.status_code == 200, revoked.text
        refused = userinfo(client, metadata)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]

        # the refresh token still counts (only the access token was revoked) ...
        third = dict(client.refresh_token(metadata["token_endpoint"]))
        assert userinfo(client, metadata).status_code == 200
        # ... a rotated one never again, and showing one ends the whole family
        with pytest.raises(OAuthError) as reused:
            client.refresh_token(metadata["token_endpoint"],
                                 refresh_token=first["refresh_token"])
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as ended:
            client.refresh_token(metadata["token_endpoint"],
                                 refresh_token=third["refresh_token"])
        assert ended.value.error == "invalid_grant"
        assert userinfo(client, metadata).status_code == 401


@pytest.mark.parametrize("answer", [deny, another_number], ids=["deny", "a-wrong-number"])
def test_a_denial_comes_back_as_access_denied(
    system: System, answer: Callable[[AuthorizationPage], Callable[[dict[str, Any]], bool]],
) -> None:
    metadata = discover(system.issuer)
    with relying_party(metadata, "shop", SHOP_CALLBACK, SHOP_SECRET) as client:
        login = begin(client, metadata)

        outcome = decided_in_telegram(system, login, "Shop Example", "shop.example", answer)
        assert outcome["status"] == "denied"
        redirect = outcome["redirect"]
        assert redirect.startswith(SHOP_CALLBACK + "?")
        query = query_of(redirect)
        assert query["error"] == "access_denied"
        assert query["state"] == login.state and query["iss"] == metadata["issuer"]
        assert "code" not in query
        # Authlib makes no exchange of an answer without a code
        with pytest.raises(MissingCodeException):
            client.fetch_token(metadata["token_endpoint"], authorization_response=redirect,
                               state=login.state, code_verifier=login.verifier,
                               grant_type="authorization_code")
        assert not client.token
