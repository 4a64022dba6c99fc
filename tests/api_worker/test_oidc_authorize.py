"""The OpenID Connect authorization endpoint and its page (issue 9, items 2, 3 and 9):
checked in RFC 6749's order, both ways in (the bot's decision, a typed code), the
redirect back with `code`, `state` and `iss`, and the page's own rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from api_worker import oidc_authorize
from api_worker.app import create_app
from shared import keys
from shared.logins import Logins
from shared.oidc_grants import OidcGrants, s256
from shared.settings import OidcClient, Secret, Settings
from tests.fixtures.api import ANN, TestClient, api_settings, issue_code
from tests.fixtures.oidc import CLI, ISSUER, SHOP, oidc_env
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_logins, run_on_store

VERIFIER = "v" * 43 + "-verifier"
CHALLENGE = s256(VERIFIER)
CALLBACK = SHOP["redirect_uris"][0]
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return api_settings(redis_url, TELEGRAM_BOT_USERNAME="tglogin_bot", **oidc_env(tmp_path))


@pytest.fixture
def provider(settings: Settings) -> Iterator[TestClient]:
    """The whole API with the provider mounted, as it will be served."""
    with TestClient(create_app(settings), base_url=ISSUER, follow_redirects=False) as client:
        yield client


def _params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": "shop", "redirect_uri": CALLBACK,
        "scope": "openid profile", "state": "st-123", "nonce": "n-456",
        "code_challenge": CHALLENGE, "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def _page(provider: TestClient, headers: dict[str, str] | None = None,
          **overrides: str | None) -> tuple[str, dict[str, Any]]:
    """The authorization page's HTML and its script's configuration."""
    response = provider.get("/oauth/authorize", params=_params(**overrides),
                            headers={**BROWSER, **(headers or {})})
    assert response.status_code == 200, response.text
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>',
                      response.text, re.S)
    assert found is not None
    return response.text, json.loads(found.group(1))


def _match(page: str) -> int:
    found = re.search(r'id="match">(\d+)<', page)
    assert found is not None
    return int(found.group(1))


def _payload(config: dict[str, Any], page: str) -> str:
    found = re.search(r"/start ([A-Za-z0-9_-]+)", page)
    assert found is not None
    return found.group(1)


def _query(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


def _redirect_error(provider: TestClient, **overrides: str | None) -> dict[str, str]:
    response = provider.get("/oauth/authorize", params=_params(**overrides), headers=BROWSER)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return _query(location)


# -- what is checked, and where its faults go --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "shown"),
    [
        ({"client_id": "nobody"}, "invalid_client"),
        ({"client_id": None}, "invalid_client"),
        ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
        ({"redirect_uri": CALLBACK + "/more"}, "invalid_request"),
        ({"redirect_uri": "https://shop.example:444/callback"}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
    ],
)
def test_an_unknown_client_or_redirect_uri_gets_an_error_page_never_a_redirect(
    provider: TestClient, overrides: dict[str, str | None], shown: str
) -> None:
    response = provider.get("/oauth/authorize", params=_params(**overrides), headers=BROWSER)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-error="{shown}"' in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # a program (no text/html in Accept) gets the JSON error model
    response = provider.get("/oauth/authorize", params=_params(**overrides))
    assert response.status_code == 400
    assert response.json()["error"] == shown and response.json()["message"]


def test_a_repeated_client_id_or_redirect_uri_is_an_error_page(provider: TestClient) -> None:
    query = urlencode(_params()) + "&redirect_uri=" + "https%3A%2F%2Fevil.example%2Fcb"
    response = provider.get("/oauth/authorize?" + query, headers=BROWSER)
    assert response.status_code == 400 and "location" not in response.headers


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"prompt": "none"}, "login_required"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"request_uri": "https://evil.example/r"}, "request_uri_not_supported"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"state": "s" * 513}, "invalid_request"),
    ],
)
def test_other_faults_go_back_to_the_client_with_state_and_iss(
    provider: TestClient, overrides: dict[str, str | None], error: str
) -> None:
    query = _redirect_error(provider, **overrides)
    assert query["error"] == error
    assert query["iss"] == ISSUER  # RFC 9207
    if "state" not in overrides:
        assert query["state"] == "st-123"
    assert "code" not in query


def test_a_repeated_parameter_is_invalid_request_at_the_client(provider: TestClient) -> None:
    response = provider.get("/oauth/authorize?" + urlencode(_params()) + "&scope=openid",
                            headers=BROWSER)
    assert response.status_code == 303
    assert _query(response.headers["location"])["error"] == "invalid_request"


def test_a_redirect_uri_with_a_query_keeps_it(
    redis_url: str, tmp_path: Path
) -> None:
    client = {**SHOP, "redirect_uris": ["https://shop.example/cb?tenant=7"]}
    settings = api_settings(redis_url, TELEGRAM_BOT_USERNAME="tglogin_bot",
                            **oidc_env(tmp_path, [client]))
    with TestClient(create_app(settings), base_url=ISSUER, follow_redirects=False) as provider:
        response = provider.get("/oauth/authorize", headers=BROWSER, params=_params(
            redirect_uri="https://shop.example/cb?tenant=7", response_type="token"))
    location = response.headers["location"]
    assert location.startswith("https://shop.example/cb?tenant=7&")
    assert _query(location)["tenant"] == "7"


# -- loopback redirect URIs (RFC 8252 7.3) -----------------------------------------------------


CLI_CLIENT = OidcClient("cli", "Example CLI", tuple(CLI["redirect_uris"]), None)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/callback",
        "http://127.0.0.1:53123/callback",
        "http://localhost:8765/cb",
        "http://localhost:1/cb",
        "http://localhost/cb",
    ],
)
def test_a_loopback_redirect_uri_matches_on_any_port(uri: str) -> None:
    assert oidc_authorize.redirect_allowed(CLI_CLIENT, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:53123/callback/extra",
        "http://127.0.0.1:53123/callback?x=1",
        "http://127.0.0.1:53123/callback#frag",
        "http://127.0.0.1:0/callback",
        "http://127.0.0.1:65536/callback",
        "http://127.0.0.1:+80/callback",
        "http://127.0.0.1:80@evil.example/callback",
        "http://evil.example@127.0.0.1:80/callback",
        "http://127.0.0.1.evil.example/callback",
        "http://127.0.0.2/callback",
        "https://127.0.0.1:53123/callback",
        "http://[::1]:5000/callback",  # [::1] was not registered
        "http://LOCALHOST:8765/cb",
        "http://localhost:8765/CB",
    ],
)
def test_other_uris_do_not_match_a_loopback_one(uri: str) -> None:
    assert not oidc_authorize.redirect_allowed(CLI_CLIENT, uri)


def test_an_ipv6_loopback_redirect_matches_on_any_port() -> None:
    client = OidcClient("cli", "CLI", ("http://[::1]/cb",), None)
    assert oidc_authorize.redirect_allowed(client, "http://[::1]:61000/cb")
    assert not oidc_authorize.redirect_allowed(client, "http://[::2]:61000/cb")
    assert not oidc_authorize.redirect_allowed(client, "http://[::1]x:61000/cb")


def test_an_https_redirect_uri_is_exact(provider: TestClient) -> None:
    shop = OidcClient("shop", "Shop", (CALLBACK,), Secret("x" * 40))
    assert oidc_authorize.redirect_allowed(shop, CALLBACK)
    assert not oidc_authorize.redirect_allowed(shop, CALLBACK.upper())
    assert not oidc_authorize.redirect_allowed(shop, CALLBACK + "?")


# -- the page -----------------------------------------------------------------------------------


def test_the_page_offers_the_deep_link_a_qr_code_the_command_and_a_code_field(
    provider: TestClient, settings: Settings
) -> None:
    response = provider.get("/oauth/authorize", params=_params(), headers=BROWSER)
    assert response.status_code == 200
    page = response.text
    _, config = _page(provider)
    assert "Log in to Shop Example" in page and "shop.example" in page
    assert 10 <= _match(page) <= 99
    payload = _payload(config, page)
    assert f'href="https://t.me/tglogin_bot?start={payload}"' in page
    assert f"/start {payload}" in page
    assert "<svg" in page  # the QR code, inline
    assert 'id="code-form"' in page and 'autocomplete="one-time-code"' in page
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    # the request id is the page's own; the payload is another value
    assert config["id"] != payload


def test_the_page_speaks_russian_by_accept_language_or_ui_locales(provider: TestClient) -> None:
    page, _ = _page(provider, headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"})
    assert '<html lang="ru">' in page and "Вход в Shop Example" in page
    page, _ = _page(provider, headers={"Accept-Language": "de-DE,en;q=0.5,ru;q=0.9"})
    assert '<html lang="ru">' in page
    page, _ = _page(provider, headers={"Accept-Language": "en-GB,ru;q=0.5"})
    assert '<html lang="en">' in page and "Log in to Shop Example" in page
    page, _ = _page(provider, headers={"Accept-Language": "en"}, ui_locales="ru")
    assert '<html lang="ru">' in page


def test_a_client_name_cannot_inject_markup(
    redis_url: str, tmp_path: Path
) -> None:
    client = {**SHOP, "name": '</script><script>alert(1)</script> & "Co"'}
    settings = api_settings(redis_url, TELEGRAM_BOT_USERNAME="tglogin_bot",
                            **oidc_env(tmp_path, [client]))
    with TestClient(create_app(settings), base_url=ISSUER) as provider:
        page, config = _page(provider, state="</script><b>")
    assert "<script>alert(1)" not in page
    assert page.count("</script>") == 2  # the config's and the page script's own
    assert config["texts"]["title"].startswith("Log in to </script><script>")


def test_head_and_a_redirected_fault_create_no_login_request(
    provider: TestClient, redis_server: RedisServer
) -> None:
    def requests() -> int:
        with redis_server.client() as client:
            return len(list(client.scan_iter(keys.login("*"))))

    assert provider.head("/oauth/authorize", params=_params()).status_code == 200
    _redirect_error(provider, response_type="token")
    assert requests() == 0
    _page(provider)
    assert requests() == 1


def test_post_to_the_authorization_endpoint_works_as_get(provider: TestClient) -> None:
    response = provider.post("/oauth/authorize", data=_params(), headers=BROWSER)
    assert response.status_code == 200 and 'id="match"' in response.text


def test_the_page_is_limited_per_address(
    redis_url: str, tmp_path: Path
) -> None:
    settings = api_settings(redis_url, TELEGRAM_BOT_USERNAME="tglogin_bot",
                            LOGIN_REQUEST_LIMIT="2", **oidc_env(tmp_path))
    with TestClient(create_app(settings), base_url=ISSUER) as provider:
        _page(provider)
        _page(provider)
        response = provider.get("/oauth/authorize", params=_params(), headers=BROWSER)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0


# -- the bot's decision ------------------------------------------------------------------------


def _decide(settings: Settings, payload: str, approve: bool, pick: int | None) -> None:
    async def body(logins: Logins) -> None:
        await logins.decide(payload, ANN, approve, pick=pick)

    run_on_logins(settings, body)


def _wait(provider: TestClient, config: dict[str, Any], seconds: int = 0) -> Any:
    return provider.post("/oauth/authorize/wait", json={"id": config["id"], "wait": seconds})


def _exchange(settings: Settings, code: str, client_id: str = "shop",
              redirect_uri: str = CALLBACK) -> Any:
    async def body(store: Any) -> Any:
        return await OidcGrants(store.redis, settings).redeem(
            code, client_id, redirect_uri, VERIFIER
        )

    return run_on_store(settings, body)


def test_the_right_number_in_the_bot_redirects_back_with_code_state_and_iss(
    provider: TestClient, settings: Settings
) -> None:
    page, config = _page(provider)
    assert _wait(provider, config).json()["status"] == "pending"
    _decide(settings, _payload(config, page), True, _match(page))
    answer = _wait(provider, config, 5).json()
    assert answer["status"] == "approved"
    query = _query(answer["redirect"])
    assert answer["redirect"].startswith(CALLBACK + "?")
    assert query["state"] == "st-123" and query["iss"] == ISSUER
    grant = _exchange(settings, query["code"])
    assert grant.user["id"] == ANN["id"] and grant.nonce == "n-456"
    assert grant.scope == "openid profile"
    # handed over once
    assert _wait(provider, config).status_code == 404


def test_a_waiting_page_is_woken_by_the_decision(provider: TestClient, settings: Settings) -> None:
    import concurrent.futures

    page, config = _page(provider)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(_wait, provider, config, 30)
        # the decision lands while the wait is held (or before it: then the read shows it)
        _decide(settings, _payload(config, page), True, _match(page))
        answer = held.result(timeout=25).json()  # well before the wait's own 30 s
    assert answer["status"] == "approved" and "code=" in answer["redirect"]


@pytest.mark.parametrize("how", ["deny", "wrong number"])
def test_a_denial_or_a_wrong_number_is_access_denied(
    provider: TestClient, settings: Settings, how: str
) -> None:
    page, config = _page(provider)
    match = _match(page)
    wrong = 10 if match != 10 else 11
    _decide(settings, _payload(config, page), how == "wrong number",
            None if how == "deny" else wrong)
    answer = _wait(provider, config, 5).json()
    assert answer["status"] == "denied"
    query = _query(answer["redirect"])
    assert query["error"] == "access_denied"
    assert query["state"] == "st-123" and query["iss"] == ISSUER
    assert "code" not in query


def test_a_logout_between_approval_and_redirect_denies(
    provider: TestClient, settings: Settings
) -> None:
    page, config = _page(provider)
    _decide(settings, _payload(config, page), True, _match(page))
    run_on_store(settings, lambda store: store.revoke_user(ANN["id"]))
    answer = _wait(provider, config).json()
    assert _query(answer["redirect"])["error"] == "access_denied"


def test_an_unknown_page_id_is_404(provider: TestClient) -> None:
    response = provider.post("/oauth/authorize/wait", json={"id": "A" * 22})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = provider.post("/oauth/authorize/wait", json={"id": 5})
    assert response.status_code == 400


def test_the_wait_takes_json_only(provider: TestClient) -> None:
    _, config = _page(provider)
    response = provider.post("/oauth/authorize/wait", data={"id": config["id"]})
    assert response.status_code == 415


# -- a typed code --------------------------------------------------------------------------------


def _type(provider: TestClient, config: dict[str, Any], code: str) -> Any:
    return provider.post("/oauth/authorize/code", json={"id": config["id"], "code": code})


def test_a_typed_code_redirects_back_with_an_authorization_code(
    provider: TestClient, settings: Settings
) -> None:
    page, config = _page(provider)
    code = issue_code(settings)
    answer = _type(provider, config, code[:4] + " " + code[4:])
    assert answer.status_code == 200, answer.text
    query = _query(answer.json()["redirect"])
    assert query["state"] == "st-123" and query["iss"] == ISSUER
    assert _exchange(settings, query["code"]).user["id"] == ANN["id"]
    # the code is spent, and the page's deep link with it
    assert _type(provider, config, code).status_code == 404
    prompt = run_on_logins(settings, lambda logins: logins.prompt(_payload(config, page)))
    assert prompt is None


def test_a_wrong_typed_code_is_refused_and_limited_per_address(
    redis_url: str, tmp_path: Path
) -> None:
    settings = api_settings(redis_url, TELEGRAM_BOT_USERNAME="tglogin_bot",
                            REDEEM_FAIL_LIMIT="2", **oidc_env(tmp_path))
    with TestClient(create_app(settings), base_url=ISSUER) as provider:
        _, config = _page(provider)
        for _ in range(2):
            answer = _type(provider, config, "00000000")
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_code"
        answer = _type(provider, config, issue_code(settings))
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
        # the page itself still waits for the bot
        assert _wait(provider, config).json()["status"] == "pending"


def test_a_typed_code_after_the_bot_decided_is_404_and_the_wait_redirects(
    provider: TestClient, settings: Settings
) -> None:
    page, config = _page(provider)
    _decide(settings, _payload(config, page), False, None)
    assert _type(provider, config, issue_code(settings)).status_code == 404
    assert _query(_wait(provider, config).json()["redirect"])["error"] == "access_denied"


# -- Redis unavailable ---------------------------------------------------------------------------


def test_redis_down_is_503_on_the_page_and_its_calls(
    provider: TestClient, redis_server: RedisServer
) -> None:
    _, config = _page(provider)
    redis_server.stop()
    response = provider.get("/oauth/authorize", params=_params(), headers=BROWSER)
    assert response.status_code == 503 and "location" not in response.headers
    assert _wait(provider, config).status_code == 503
    assert _type(provider, config, "12345678").status_code == 503
    redis_server.start()
    _page(provider)  # and it heals by itself


# -- secrets -------------------------------------------------------------------------------------


def test_no_page_id_payload_typed_code_or_authorization_code_in_logs_or_redis(
    provider: TestClient, settings: Settings, redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG"):
        page, config = _page(provider)
        typed = issue_code(settings)
        redirect = _type(provider, config, typed).json()["redirect"]
        page2, config2 = _page(provider)
        _decide(settings, _payload(config2, page2), True, _match(page2))
        redirect2 = _wait(provider, config2).json()["redirect"]
    secrets = [config["id"], _payload(config, page), typed, _query(redirect)["code"],
               config2["id"], _payload(config2, page2), _query(redirect2)["code"]]
    with redis_server.client() as client:
        stored = []
        for key in client.scan_iter("*"):
            stored.append(str(key))
            kind = client.type(key)
            if kind == "hash":
                stored.extend(map(str, client.hgetall(key).items()))
            elif kind == "string":
                stored.append(str(client.get(key)))
    everything = caplog.text + "\n".join(stored)
    for secret in secrets:
        assert secret not in everything
