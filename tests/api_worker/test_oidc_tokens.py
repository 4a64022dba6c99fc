"""api_worker.oidc_tokens: the token, userinfo and revocation endpoints through the whole
app (create_app), on a real Redis. Codes are
made as the authorization endpoint makes them (`OidcGrants.create`)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from api_worker.app import create_app
from api_worker.oidc_tokens import ID_TOKEN_TTL_SECONDS
from shared import keys
from shared.oidc_grants import OidcGrants, oidc_client_tag
from shared.settings import Settings
from shared.tokens import Claims, new_token_id, seal
from tests.fixtures.api import ANN, TestClient, api_settings, issue_code
from tests.fixtures.common import free_port
from tests.fixtures.oidc import (
    AUTH_TIME,
    CHALLENGE,
    CLI,
    CLI_CALLBACK,
    ISSUER,
    NONCE,
    SHOP,
    SHOP_CALLBACK,
    SHOP_SECRET,
    VERIFIER,
    authorization_code,
    oidc_env,
)
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store

TOKEN, USERINFO, REVOKE = "/oauth/token", "/oauth/userinfo", "/oauth/revoke"
SHOP_ID, CLI_ID = SHOP["client_id"], CLI["client_id"]
ANN_CLAIMS = {"sub": "1001", "telegram_id": 1001, "name": "Ann",
              "preferred_username": "ann", "locale": "en"}


def _settings(redis_url: str, tmp_path: Path, **env: str) -> Settings:
    return api_settings(redis_url, **{**oidc_env(tmp_path), **env})


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return _settings(redis_url, tmp_path)


def _app(settings: Settings, address: str = "198.51.100.7") -> TestClient:
    return TestClient(create_app(settings), base_url=ISSUER, client=(address, 50000))


@pytest.fixture
def provider(settings: Settings) -> Iterator[TestClient]:
    """The whole API with the provider published, from one client address."""
    with _app(settings) as client:
        yield client


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 2.3.1: each part form-urlencoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def exchange(provider: TestClient, code: str, *, how: str = "basic",
             **params: str | None) -> httpx.Response:
    """The code at the token endpoint: as the shop by Basic or post, or as the CLI."""
    form: dict[str, str | None] = {"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": SHOP_CALLBACK, "code_verifier": VERIFIER}
    headers: dict[str, str] = {}
    if how == "basic":
        headers = basic(SHOP_ID, SHOP_SECRET)
    elif how == "post":
        form.update(client_id=SHOP_ID, client_secret=SHOP_SECRET)
    else:
        form.update(client_id=CLI_ID, redirect_uri=CLI_CALLBACK)
    form.update(params)
    data = {k: v for k, v in form.items() if v is not None}
    return provider.post(TOKEN, data=data, headers=headers)


def refresh(provider: TestClient, token: str, **params: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token, **params}
    return provider.post(TOKEN, data=data, headers=basic(SHOP_ID, SHOP_SECRET))


def userinfo(provider: TestClient, token: str) -> httpx.Response:
    return provider.get(USERINFO, headers={"Authorization": f"Bearer {token}"})


def revoke(provider: TestClient, token: str, *, client: str = SHOP_ID,
           **params: str) -> httpx.Response:
    auth = basic(SHOP_ID, SHOP_SECRET) if client == SHOP_ID else {}
    data = {"token": token, **params, **({} if client == SHOP_ID else {"client_id": client})}
    return provider.post(REVOKE, data=data, headers=auth)


def tokens(settings: Settings, provider: TestClient, **code_args: Any) -> dict[str, Any]:
    """A fresh login of Ann at the shop: the token endpoint's answer."""
    response = exchange(provider, authorization_code(settings, **code_args))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An OAuth error answer (RFC 6749 5.2 and the house model at once)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["error_description"] == body["message"] and body["message"]
    assert set(body) == {"error", "error_description", "message"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-allow-origin"] == "*"
    return body


def validated(settings: Settings, provider: TestClient, id_token: str,
              client_id: str = SHOP_ID, **expect: Any) -> dict[str, Any]:
    """An ID token validated as a relying party does: against the published JWKS (joserfc
    alone), RS256 only, iss, aud, exp, iat, nonce."""
    jwks = KeySet.import_key_set(provider.get("/oauth/jwks").json())
    token = jwt.decode(id_token, jwks, algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    assert settings.oidc is not None
    assert token.header["kid"] == settings.oidc.signing_keys.signing_kid
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": ISSUER},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
        **{name: {"essential": True, "value": value} for name, value in expect.items()},
    }
    jwt.JWTClaimsRegistry(**options).validate(token.claims)
    return dict(token.claims)


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


# -- the code exchange ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["basic", "post"])
def test_a_confidential_client_exchanges_a_code(
    settings: Settings, provider: TestClient, how: str
) -> None:
    response = exchange(provider, authorization_code(settings), how=how)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token",
                         "id_token", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "openid profile"
    claims = validated(settings, provider, body["id_token"], nonce=NONCE, sub="1001")
    assert claims["at_hash"] == _at_hash(body["access_token"])
    assert userinfo(provider, body["access_token"]).json() == ANN_CLAIMS


def test_a_public_client_exchanges_a_code_with_its_id_alone(
    settings: Settings, provider: TestClient
) -> None:
    code = authorization_code(settings, CLI_ID, CLI_CALLBACK)
    response = exchange(provider, code, how="public")
    assert response.status_code == 200, response.text
    body = response.json()
    validated(settings, provider, body["id_token"], client_id=CLI_ID, nonce=NONCE)
    assert userinfo(provider, body["access_token"]).json()["sub"] == "1001"
    # Basic with an empty password is the same "none" some libraries send
    code = authorization_code(settings, CLI_ID, CLI_CALLBACK)
    response = provider.post(TOKEN, headers=basic(CLI_ID, ""), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CLI_CALLBACK,
        "code_verifier": VERIFIER})
    assert response.status_code == 200, response.text


def test_the_id_token(settings: Settings, provider: TestClient) -> None:
    before = int(time.time())
    body = tokens(settings, provider)
    claims = validated(settings, provider, body["id_token"], nonce=NONCE, sub="1001",
                       auth_time=AUTH_TIME)
    assert before <= claims["iat"] <= time.time()
    assert claims["exp"] - claims["iat"] == ID_TOKEN_TTL_SECONDS
    assert claims["at_hash"] == _at_hash(body["access_token"])
    assert {k: claims[k] for k in ANN_CLAIMS} == ANN_CLAIMS
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
                           "at_hash", *ANN_CLAIMS}
    # another user, with a last name and no username or language; no nonce, no profile
    bob = {"id": 7_000_000_001, "username": None, "first_name": "Bob", "last_name": "Lee",
           "language_code": None}
    plain = tokens(settings, provider, user=bob, nonce=None, scope="openid")
    claims = validated(settings, provider, plain["id_token"], sub="7000000001")
    assert "nonce" not in claims and "name" not in claims
    assert claims["telegram_id"] == 7_000_000_001
    assert plain["scope"] == "openid"
    assert userinfo(provider, plain["access_token"]).json() == {
        "sub": "7000000001", "telegram_id": 7_000_000_001}
    profiled = tokens(settings, provider, user=bob)
    assert userinfo(provider, profiled["access_token"]).json() == {
        "sub": "7000000001", "telegram_id": 7_000_000_001, "name": "Bob Lee"}


def test_basic_credentials_are_form_urlencoded(
    redis_url: str, tmp_path: Path
) -> None:
    secret = "a secret: with 100% of+ the é characters " + "x" * 10
    client = {**SHOP, "client_id": "shop.eu~1", "client_secret": secret}
    settings = _settings(redis_url, tmp_path, OIDC_CLIENTS=json.dumps([client]))
    with _app(settings) as provider:
        code = authorization_code(settings, "shop.eu~1")
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": SHOP_CALLBACK, "code_verifier": VERIFIER}
        raw = base64.b64encode(f"shop.eu~1:{secret}".encode()).decode()
        plain = provider.post(TOKEN, data=data, headers={"Authorization": f"Basic {raw}"})
        refused(plain, 401, "invalid_client")  # "+" and "%" are not themselves encoded
        response = provider.post(TOKEN, data=data, headers=basic("shop.eu~1", secret))
        assert response.status_code == 200, response.text


# -- client authentication ------------------------------------------------------------------


def _auth_cases() -> list[tuple[str, dict[str, str], dict[str, str], bool]]:
    """(what, headers, form additions, Basic tried)."""
    wrong = SHOP_SECRET[:-1] + "x"
    return [
        ("wrong secret, Basic", basic(SHOP_ID, wrong), {}, True),
        ("wrong secret, post", {}, {"client_id": SHOP_ID, "client_secret": wrong}, False),
        ("a prefix of the secret", {}, {"client_id": SHOP_ID,
                                         "client_secret": SHOP_SECRET[:-1]}, False),
        ("unknown client", basic("nobody", SHOP_SECRET), {}, True),
        ("unknown client, post", {}, {"client_id": "nobody"}, False),
        ("confidential without a secret", {}, {"client_id": SHOP_ID}, False),
        ("confidential, Basic without a secret", basic(SHOP_ID, ""), {}, True),
        ("no client at all", {}, {}, False),
        ("two methods", basic(SHOP_ID, SHOP_SECRET), {"client_secret": SHOP_SECRET}, True),
        ("Basic for one, client_id of another", basic(SHOP_ID, SHOP_SECRET),
         {"client_id": CLI_ID}, True),
        ("a public client with a secret", {}, {"client_id": CLI_ID, "client_secret": "x"},
         False),
        ("not base64", {"Authorization": "Basic %%%"}, {}, True),
        ("no colon", {"Authorization": "Basic " + base64.b64encode(b"shop").decode()}, {},
         True),
        ("another scheme", {"Authorization": f"Bearer {SHOP_SECRET}"}, {}, True),
        ("a client assertion with alg none", {}, {
            "client_id": SHOP_ID,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _unsigned({"iss": SHOP_ID, "sub": SHOP_ID, "aud": ISSUER,
                                           "exp": int(time.time()) + 60}),
        }, False),
    ]


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(("what", "headers", "form", "tried_basic"), _auth_cases(),
                         ids=[case[0] for case in _auth_cases()])
def test_client_authentication_failures_are_invalid_client(
    settings: Settings, provider: TestClient, what: str, headers: dict[str, str],
    form: dict[str, str], tried_basic: bool,
) -> None:
    code = authorization_code(settings)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": SHOP_CALLBACK,
            "code_verifier": VERIFIER, **form}
    for path, body in ((TOKEN, data), (REVOKE, {"token": "x", **form})):
        response = provider.post(path, data=body, headers=headers)
        refused(response, 401, "invalid_client")
        if tried_basic:
            assert response.headers["www-authenticate"] == 'Basic realm="tglogin"'
        else:
            assert "www-authenticate" not in response.headers
    # the code was never looked at: it still works for its client
    assert exchange(provider, code).status_code == 200


# -- the grant ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"code_verifier": VERIFIER[:-1] + "l"},  # wrong
        {"code_verifier": None},  # missing
        {"code_verifier": CHALLENGE},  # the challenge itself
        {"redirect_uri": SHOP_CALLBACK + "/"},  # mismatched redirect URI
        {"redirect_uri": "https://shop.example/other"},
    ],
    ids=["wrong-verifier", "no-verifier", "challenge-as-verifier", "redirect-slash",
         "other-redirect"],
)
def test_a_bad_grant_is_invalid_grant_and_spends_the_code(
    settings: Settings, provider: TestClient, params: dict[str, str | None]
) -> None:
    code = authorization_code(settings)
    refused(exchange(provider, code, **params), 400, "invalid_grant")
    refused(exchange(provider, code), 400, "invalid_grant")  # spent


def test_an_expired_code_is_invalid_grant(
    settings: Settings, provider: TestClient, redis_server: RedisServer
) -> None:
    code = authorization_code(settings)
    with redis_server.client() as client:
        [key] = client.keys(keys.OIDC_CODE + "*")
        client.hset(key, "e", int(time.time() * 1000) - 1)  # what 60 s do
    refused(exchange(provider, code), 400, "invalid_grant")
    gone = authorization_code(settings)  # and one whose key has expired
    with redis_server.client() as client:
        for key in client.keys(keys.OIDC_CODE + "*"):
            if client.hget(key, "f") is None:
                client.pexpire(key, 1)
        deadline = time.monotonic() + 5
        while any(client.hget(k, "f") is None for k in client.keys(keys.OIDC_CODE + "*")):
            assert time.monotonic() < deadline, "the code's key did not expire"
            time.sleep(0.01)
    refused(exchange(provider, gone), 400, "invalid_grant")


def test_a_code_redeemed_by_another_client_is_invalid_grant(
    settings: Settings, provider: TestClient
) -> None:
    code = authorization_code(settings)  # the shop's
    refused(exchange(provider, code, how="public", redirect_uri=SHOP_CALLBACK), 400,
            "invalid_grant")
    refused(exchange(provider, code), 400, "invalid_grant")  # and it is spent


def test_a_reused_code_is_refused_and_revokes_the_first_tokens(
    settings: Settings, provider: TestClient
) -> None:
    code = authorization_code(settings)
    first = exchange(provider, code).json()
    assert userinfo(provider, first["access_token"]).status_code == 200
    refused(exchange(provider, code), 400, "invalid_grant")
    refused(userinfo(provider, first["access_token"]), 401, "invalid_token")
    refused(refresh(provider, first["refresh_token"]), 400, "invalid_grant")


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(
    settings: Settings, provider: TestClient
) -> None:
    first = tokens(settings, provider)
    response = refresh(provider, first["refresh_token"], scope="openid")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == set(first)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "openid profile"  # what was granted
    claims = validated(settings, provider, second["id_token"], sub="1001",
                       auth_time=AUTH_TIME)
    assert "nonce" not in claims  # OIDC Core 12.2
    assert claims["at_hash"] == _at_hash(second["access_token"])
    assert userinfo(provider, second["access_token"]).json() == ANN_CLAIMS
    # another client cannot use it, and trying changes nothing
    other = provider.post(TOKEN, data={"grant_type": "refresh_token", "client_id": CLI_ID,
                                       "refresh_token": second["refresh_token"]})
    refused(other, 400, "invalid_grant")
    assert userinfo(provider, second["access_token"]).status_code == 200
    # the rotated one again: refused, and every token of the family ends
    refused(refresh(provider, first["refresh_token"]), 400, "invalid_grant")
    for body in (first, second):
        refused(userinfo(provider, body["access_token"]), 401, "invalid_token")
    refused(refresh(provider, second["refresh_token"]), 400, "invalid_grant")


# -- userinfo -------------------------------------------------------------------------------


def test_userinfo_by_get_post_and_head(settings: Settings, provider: TestClient) -> None:
    access = tokens(settings, provider)["access_token"]
    auth = {"Authorization": f"Bearer {access}"}
    got = provider.get(USERINFO, headers=auth)
    assert got.status_code == 200 and got.json() == ANN_CLAIMS
    assert got.headers["cache-control"] == "no-store"
    assert got.headers["access-control-allow-origin"] == "*"
    assert provider.post(USERINFO, headers=auth).json() == ANN_CLAIMS
    head = provider.head(USERINFO, headers=auth)
    assert head.status_code == 200 and head.content == b""
    assert provider.get(USERINFO, headers=auth).json() == ANN_CLAIMS


def test_userinfo_refuses_every_other_token(
    settings: Settings, provider: TestClient, redis_url: str, tmp_path: Path
) -> None:
    body = tokens(settings, provider)
    access = body["access_token"]
    flipped = access[:12] + ("A" if access[12] != "A" else "B") + access[13:]
    secret = settings.auth_secret
    expired = seal(secret, Claims(1001, int(time.time()) - 1, 0, new_token_id(),
                                  oidc_client_tag(secret, SHOP_ID, True)))
    # wrongly signed: a deployment with another AUTH_SECRET, on the same Redis
    other = _settings(redis_url, tmp_path, AUTH_SECRET="another-secret-" + "z" * 32)

    async def elsewhere(store: Any) -> str:
        grants = OidcGrants(store.redis, other)
        code = await grants.create(SHOP_ID, SHOP_CALLBACK, CHALLENGE, None, ANN, 1, "openid")
        return (await grants.redeem(code, SHOP_ID, SHOP_CALLBACK, VERIFIER)).access_token

    foreign = run_on_store(other, elsewhere)
    api_token = provider.post("/v1/codes/redeem", json={"code": issue_code(settings)})
    forged_jwt = _unsigned({"iss": ISSUER, "sub": "1001", "aud": SHOP_ID,
                            "exp": int(time.time()) + 60})
    for token in (flipped, access + "A", access[:-1], expired, foreign,
                  api_token.json()["access_token"], body["refresh_token"], body["id_token"],
                  forged_jwt, "tgl_x", "x"):
        response = userinfo(provider, token)
        refused(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    for headers in ({}, {"Authorization": f"Basic {access}"}):
        response = provider.get(USERINFO, headers=headers)
        refused(response, 401, "invalid_token")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert userinfo(provider, access).status_code == 200  # the real one still counts


def test_an_oidc_access_token_is_no_token_of_the_v1_api(
    settings: Settings, provider: TestClient
) -> None:
    """Tokens of the two faces never cross: an OIDC access token is refused by /v1/me
    (here the API is open, so any API token would count), and the API's token by
    userinfo (above)."""
    body = tokens(settings, provider)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    response = provider.get("/v1/me", headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert provider.post("/v1/tokens/revoke", headers=headers).status_code == 401
    assert userinfo(provider, body["access_token"]).status_code == 200  # not revoked by it


# -- revocation -----------------------------------------------------------------------------


def test_revoking_an_access_token_ends_it_at_once(settings: Settings,
                                                  provider: TestClient) -> None:
    body = tokens(settings, provider)
    response = revoke(provider, body["access_token"], token_type_hint="access_token")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-allow-origin"] == "*"
    refused(userinfo(provider, body["access_token"]), 401, "invalid_token")
    # its refresh token lives on (RFC 7009 2.1: ending it too is optional)
    renewed = refresh(provider, body["refresh_token"]).json()
    assert userinfo(provider, renewed["access_token"]).status_code == 200
    assert revoke(provider, body["access_token"]).status_code == 200  # again: nothing


def test_revoking_a_refresh_token_ends_its_family(settings: Settings,
                                                   provider: TestClient) -> None:
    first = tokens(settings, provider)
    second = refresh(provider, first["refresh_token"]).json()
    other = tokens(settings, provider)  # another login of the same user
    # a wrong hint is no matter (RFC 7009 2.1)
    response = revoke(provider, second["refresh_token"], token_type_hint="access_token")
    assert response.status_code == 200
    for body in (first, second):
        refused(userinfo(provider, body["access_token"]), 401, "invalid_token")
    refused(refresh(provider, second["refresh_token"]), 400, "invalid_grant")
    assert userinfo(provider, other["access_token"]).status_code == 200
    # a public client revokes its own by its client_id alone
    code = authorization_code(settings, CLI_ID, CLI_CALLBACK)
    cli = exchange(provider, code, how="public").json()
    assert revoke(provider, cli["refresh_token"], client=CLI_ID).status_code == 200
    refused(userinfo(provider, cli["access_token"]), 401, "invalid_token")


def test_revoking_unknown_or_invalid_tokens_is_200(settings: Settings,
                                                    provider: TestClient) -> None:
    body = tokens(settings, provider)
    secret = settings.auth_secret
    expired = seal(secret, Claims(1001, int(time.time()) - 1, 0, new_token_id(),
                                  oidc_client_tag(secret, SHOP_ID)))
    refresh_token = body["refresh_token"]
    for token in ("x", "tgr_" + "A" * 60, refresh_token[:-2], expired, body["id_token"],
                  "tgl_" + "A" * 40, "é" * 20):
        assert revoke(provider, token).status_code == 200, token
    assert userinfo(provider, body["access_token"]).status_code == 200  # untouched
    refused(provider.post(REVOKE, data={}, headers=basic(SHOP_ID, SHOP_SECRET)), 400,
            "invalid_request")


def test_another_clients_tokens_are_not_revoked(settings: Settings,
                                                 provider: TestClient) -> None:
    body = tokens(settings, provider)  # the shop's
    for token in (body["access_token"], body["refresh_token"]):
        refused(revoke(provider, token, client=CLI_ID), 400, "invalid_grant")
    assert userinfo(provider, body["access_token"]).status_code == 200
    assert refresh(provider, body["refresh_token"]).status_code == 200


# -- limits ---------------------------------------------------------------------------------


def test_failures_per_address_get_429_and_ipv6_spellings_count_together(
    redis_url: str, tmp_path: Path
) -> None:
    settings = _settings(redis_url, tmp_path, API_KEY_FAIL_LIMIT="3",
                         API_KEY_FAIL_WINDOW_SECONDS="600")
    wrong = basic(SHOP_ID, "wrong-" + SHOP_SECRET)
    spellings = ["2001:db8:0:1::1", "2001:DB8:0:1:0:0:0:2", "2001:db8:0:1:ffff::9",
                 "[2001:db8::1:aaaa:0:0:1]"]
    for address in spellings[:3]:  # three failures of three kinds, from one /64
        with _app(settings, address) as provider:
            if address == spellings[0]:
                refused(provider.post(TOKEN, data={"grant_type": "authorization_code"},
                                      headers=wrong), 401, "invalid_client")
            elif address == spellings[1]:
                refused(exchange(provider, "A" * 54), 400, "invalid_grant")
            else:
                access = tokens(settings, provider)["access_token"]  # valid: costs nothing
                refused(revoke(provider, access, client=CLI_ID), 400, "invalid_grant")
    with _app(settings, spellings[3]) as provider:
        code = authorization_code(settings)
        for response in (exchange(provider, code), revoke(provider, "x"),
                         provider.post(TOKEN, headers=wrong, data={"grant_type": "x"})):
            body = refused(response, 429, "rate_limited")
            assert 590 <= int(response.headers["retry-after"]) <= 600, body
        # userinfo is not a failure budget's business
        assert userinfo(provider, access).status_code == 200
    with _app(settings, "2001:db8:0:2::1") as provider:  # the next /64
        assert exchange(provider, code).status_code == 200  # the code was never tried


def test_valid_requests_never_spend_the_budget(
    redis_url: str, tmp_path: Path
) -> None:
    settings = _settings(redis_url, tmp_path, API_KEY_FAIL_LIMIT="2")
    with _app(settings) as provider:
        for _ in range(4):
            body = tokens(settings, provider)
            assert refresh(provider, body["refresh_token"]).status_code == 200
            assert revoke(provider, body["access_token"]).status_code == 200
            assert revoke(provider, "not-a-token").status_code == 200
            refused(provider.post(TOKEN, data={"grant_type": "password"},
                                  headers=basic(SHOP_ID, SHOP_SECRET)),
                    400, "unsupported_grant_type")
        refused(exchange(provider, "A" * 54), 400, "invalid_grant")
        refused(exchange(provider, "B" * 54), 400, "invalid_grant")
        refused(exchange(provider, authorization_code(settings)), 429, "rate_limited")


# -- failure, methods, bodies ---------------------------------------------------------------


def test_503_when_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    try:
        settings = _settings(server.url, tmp_path, REDIS_TIMEOUT="1")
        with _app(settings) as provider:
            body = tokens(settings, provider)
            code = authorization_code(settings)
            server.stop()
            for response in (exchange(provider, code),
                             refresh(provider, body["refresh_token"]),
                             userinfo(provider, body["access_token"]),
                             revoke(provider, body["access_token"])):
                refused(response, 503, "unavailable")
            # a token that is none of ours needs no Redis to be refused
            refused(userinfo(provider, "tgl_x"), 401, "invalid_token")
    finally:
        server.stop()


def test_preflight_and_methods(settings: Settings, provider: TestClient) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for path, methods in ((TOKEN, "POST, OPTIONS"), (REVOKE, "POST, OPTIONS"),
                          (USERINFO, "GET, HEAD, POST, OPTIONS")):
        response = provider.options(path, headers=preflight)
        assert response.status_code == 204, path
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-allow-methods"] == methods
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "access-control-allow-credentials" not in response.headers
    body = tokens(settings, provider)
    for path in (TOKEN, REVOKE):  # POST only: HEAD and GET change nothing, answer 405
        for method in ("HEAD", "GET"):
            response = provider.request(method, path, params={"token": body["access_token"]},
                                        headers=basic(SHOP_ID, SHOP_SECRET))
            assert response.status_code == 405, (method, path)
    assert userinfo(provider, body["access_token"]).status_code == 200
    code = authorization_code(settings)
    assert provider.head(TOKEN, params={"code": code}).status_code == 405
    assert exchange(provider, code).status_code == 200  # untouched by the HEAD


@pytest.mark.parametrize(
    ("content", "content_type", "status", "error"),
    [
        (b"grant_type=authorization_code&code=%FF", "application/x-www-form-urlencoded", 400,
         "invalid_request"),
        (b"grant_type=authorization_code&code=\xff", "application/x-www-form-urlencoded", 400,
         "invalid_request"),
        (b"grant_type=authorization_code&code=%ED%A0%80", "application/x-www-form-urlencoded",
         400, "invalid_request"),
        (b'{"grant_type": "authorization_code"}', "application/json", 400, "invalid_request"),
        (b"grant_type=authorization_code", "text/plain", 400, "invalid_request"),
        (b"grant_type=authorization_code", "", 400, "invalid_request"),
        (b"grant_type=authorization_code&code=" + b"A" * 5000,
         "application/x-www-form-urlencoded", 413, "too_large"),
        (b"grant_type=refresh_token&grant_type=authorization_code",
         "application/x-www-form-urlencoded", 400, "invalid_request"),
        (b"&".join(b"x%d=1" % n for n in range(40)), "application/x-www-form-urlencoded", 400,
         "invalid_request"),
        (b"grant_type=authorization_code&redirect_uri=https%3A%2F%2Fshop.example%2Fcallback",
         "application/x-www-form-urlencoded", 400, "invalid_request"),  # no code
        (b"code=x", "application/x-www-form-urlencoded", 400, "invalid_request"),
        (b"grant_type=password&username=a&password=b", "application/x-www-form-urlencoded",
         400, "unsupported_grant_type"),
        (b"grant_type=refresh_token", "application/x-www-form-urlencoded", 400,
         "invalid_request"),
    ],
)
def test_bad_requests_at_the_token_endpoint(
    provider: TestClient, content: bytes, content_type: str, status: int, error: str
) -> None:
    headers = {**basic(SHOP_ID, SHOP_SECRET), "Content-Type": content_type}
    refused(provider.post(TOKEN, content=content, headers=headers), status, error)


def test_bad_bodies_at_the_revocation_endpoint(provider: TestClient) -> None:
    auth = basic(SHOP_ID, SHOP_SECRET)
    for content, content_type in ((b"token=%FF", "application/x-www-form-urlencoded"),
                                  (b'{"token": "x"}', "application/json")):
        response = provider.post(REVOKE, content=content,
                                 headers={**auth, "Content-Type": content_type})
        refused(response, 400, "invalid_request")


def test_no_code_token_secret_or_verifier_is_logged(
    settings: Settings, provider: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        code = authorization_code(settings)
        body = exchange(provider, code).json()
        refused(exchange(provider, code), 400, "invalid_grant")
        refused(exchange(provider, authorization_code(settings), how="post",
                         client_secret=SHOP_SECRET + "x"), 401, "invalid_client")
        renewed = refresh(provider, tokens(settings, provider)["refresh_token"]).json()
        assert userinfo(provider, renewed["access_token"]).status_code == 200
        assert revoke(provider, renewed["refresh_token"]).status_code == 200
        refused(refresh(provider, renewed["refresh_token"]), 400, "invalid_grant")
    assert "oidc authorization_code grant for user 1001 to client shop" in caplog.text
    assert "oidc refresh_token grant for user 1001 to client shop" in caplog.text
    assert "oidc token revoked by client shop" in caplog.text
    for secret in (code, body["access_token"], body["refresh_token"], body["id_token"],
                   renewed["access_token"], renewed["refresh_token"], SHOP_SECRET, VERIFIER):
        assert secret not in caplog.text


def test_the_discovery_document_names_these_endpoints(provider: TestClient) -> None:
    document = provider.get("/.well-known/openid-configuration").json()
    assert document["token_endpoint"] == ISSUER + TOKEN
    assert document["userinfo_endpoint"] == ISSUER + USERINFO
    assert document["revocation_endpoint"] == ISSUER + REVOKE
    for path in (TOKEN, USERINFO, REVOKE):
        assert provider.options(path).status_code == 204
