"""The /demo website's "Log in with OpenID Connect": a relying party (Authlib) of the
API's own provider, driven here without a browser (tests/e2e/test_browser_oidc.py does
it with one)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.common.security import is_secure_transport

from api_worker.app import create_app
from api_worker.demo import COOKIE
from api_worker.demo_oidc import CALLBACK_PATH, OIDC_LOGIN_PATH, relying_party
from api_worker.oidc_authorize import CODE_PATH
from tests.fixtures.api import ANN, ApiProcess, TestClient, api_settings, issue_code
from tests.fixtures.common import free_port
from tests.fixtures.demo import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    demo_clients,
    demo_session,
    signed_demo_session,
)
from tests.fixtures.oidc import oidc_env

STATE_KEY = "_state_tglogin_"  # Authlib's session key of a login's state, with our name


@pytest.fixture
def visitor(oidc_demo_api: ApiProcess) -> Iterator[httpx.Client]:
    """A browser's view of the demo: cookies kept, redirects looked at one by one."""
    with httpx.Client(base_url=oidc_demo_api.url, timeout=40) as client:
        yield client


def _session(visitor: httpx.Client) -> dict[str, Any]:
    """The demo's session in the browser's cookie ({} once emptied: the cookie is gone)."""
    cookie = visitor.cookies.get(COOKIE)
    return demo_session(cookie) if cookie else {}


def _forge(visitor: httpx.Client, redis_url: str, session: dict[str, Any]) -> None:
    """Replace the browser's session with `session`, signed as only the server could."""
    visitor.cookies.clear()
    visitor.cookies.set(
        COOKIE, signed_demo_session(api_settings(redis_url), session),
        domain=visitor.base_url.host, path="/demo",  # where the demo's cookie lives
    )


def _start(visitor: httpx.Client) -> tuple[str, dict[str, str]]:
    """Log in with OpenID Connect: where the demo sends the browser, with its parameters."""
    response = visitor.get(OIDC_LOGIN_PATH)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return location, params


def _back(visitor: httpx.Client, **params: str) -> dict[str, Any]:
    """The provider sends the browser back to the callback; what the page then says."""
    response = visitor.get(f"{CALLBACK_PATH}?{urlencode(params)}")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/demo"
    said: dict[str, Any] = visitor.get("/demo/session").json()
    return said


def _typed_code(visitor: httpx.Client, authorize_url: str, code: str) -> str:
    """On the provider's page, the visitor types a code from the bot: where it sends them."""
    page = visitor.get(authorize_url, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>', page.text)
    assert found, page.text
    request_id = json.loads(found.group(1))["id"]
    answer = visitor.post(CODE_PATH, json={"id": request_id, "code": code})
    assert answer.status_code == 200, answer.text
    redirect: str = answer.json()["redirect"]
    return redirect


def _userinfo(api: ApiProcess, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return httpx.get(f"{api.url}/oauth/userinfo", headers=headers, timeout=10).status_code


def test_the_login_redirect_carries_pkce_s256_state_and_nonce(
    oidc_demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    assert visitor.get("/demo/session").json() == {
        "logged_in": False, "oidc_login": OIDC_LOGIN_PATH,
    }
    location, params = _start(visitor)
    issuer = oidc_demo_api.url
    assert location.startswith(f"{issuer}/oauth/authorize?")  # found by discovery
    assert params["response_type"] == "code"
    assert params["client_id"] == DEMO_CLIENT_ID
    assert params["redirect_uri"] == issuer + CALLBACK_PATH
    assert params["scope"] == "openid profile"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 20 and len(params["nonce"]) >= 20
    # state, nonce and the verifier are in this browser's (signed) session, as Authlib keeps them
    started = _session(visitor)[STATE_KEY + params["state"]]["data"]
    assert started["nonce"] == params["nonce"]
    verifier = started["code_verifier"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert params["code_challenge"] == challenge.rstrip(b"=").decode()
    assert DEMO_CLIENT_SECRET not in location + json.dumps(_session(visitor))

    # each login has its own
    _, again = _start(visitor)
    assert (again["state"], again["nonce"], again["code_challenge"]) != (
        params["state"], params["nonce"], params["code_challenge"])
    # the provider takes the request: its page offers the bot
    page = visitor.get(location, headers={"Accept": "text/html"})
    assert page.status_code == 200 and 'id="match"' in page.text
    # at DEBUG Authlib would log the verifier: the API worker's logging configuration
    # (this process runs `python -m api_worker` at LOG_LEVEL=DEBUG) holds it at WARNING
    assert verifier not in oidc_demo_api.output()


def test_a_typed_code_logs_the_visitor_in_and_log_out_revokes_the_grant(
    redis_url: str, oidc_demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    location, params = _start(visitor)
    redirect = _typed_code(visitor, location, issue_code(api_settings(redis_url)))
    back = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    assert redirect.startswith(oidc_demo_api.url + CALLBACK_PATH + "?")
    assert back["state"] == params["state"] and back["iss"] == oidc_demo_api.url

    response = visitor.get(redirect)  # the code exchanged, the ID token and userinfo checked
    assert response.status_code == 303 and response.headers["location"] == "/demo"
    state = visitor.get("/demo/session").json()
    assert state == {"logged_in": True, "user": ANN, "via": "openid_connect"}
    session = _session(visitor)
    assert not any(key.startswith(STATE_KEY) for key in session)  # the state is spent
    access_token = session["oidc"]["access_token"]
    assert _userinfo(oidc_demo_api, access_token) == 200
    assert "POST /oauth/token" in oidc_demo_api.output()
    assert "GET /oauth/userinfo" in oidc_demo_api.output()
    # the code was for one use: the same answer again logs no one in
    visitor.cookies.clear()
    _start(visitor)
    again = _back(visitor, **back)
    assert again["logged_in"] is False and "not started on this page" in again["error"]

    _forge(visitor, redis_url, session)  # the logged-in session again
    logout = visitor.post("/demo/logout", json={})
    assert logout.status_code == 200, logout.text
    assert logout.json() == {"logged_in": False, "oidc_login": OIDC_LOGIN_PATH}
    assert _userinfo(oidc_demo_api, access_token) == 401  # revoked at the provider


def test_a_denied_login_shows_a_message_and_logs_no_one_in(
    oidc_demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    _, params = _start(visitor)
    said = _back(visitor, error="access_denied", state=params["state"], iss=oidc_demo_api.url)
    assert said == {
        "logged_in": False, "oidc_login": OIDC_LOGIN_PATH,
        "notice": "The login was denied in Telegram. Nothing happened.",
    }
    assert visitor.get("/demo/session").json() == {
        "logged_in": False, "oidc_login": OIDC_LOGIN_PATH,
    }  # said once
    assert not any(key.startswith(STATE_KEY) for key in _session(visitor))


@pytest.mark.parametrize("started", [True, False])
def test_a_forged_state_is_refused_before_any_token_request(
    oidc_demo_api: ApiProcess, visitor: httpx.Client, started: bool
) -> None:
    """A callback for a state this browser did not start (login CSRF): refused, and no
    code is exchanged. With `started`, the browser has a login of its own under way."""
    if started:
        _, params = _start(visitor)
    issuer = oidc_demo_api.url
    for extra in ({"state": "forged-state-0123456789"}, {}):
        said = _back(visitor, code="a" * 43, iss=issuer, **extra)
        assert said["logged_in"] is False
        assert said["error"].startswith("That login was not started on this page")
    denied = _back(visitor, error="access_denied", state="forged-state-0123456789", iss=issuer)
    assert "not started on this page" in denied["error"]  # not taken for a real denial
    assert "POST /oauth/token" not in oidc_demo_api.output()
    if started:  # the login under way is still good
        assert STATE_KEY + params["state"] in _session(visitor)


def test_an_answer_naming_another_issuer_is_refused(
    redis_url: str, oidc_demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    """RFC 9207: the provider says `iss` is sent, so an answer with another (a mix-up) is
    not used, though its code and state are good."""
    location, _ = _start(visitor)
    redirect = _typed_code(visitor, location, issue_code(api_settings(redis_url)))
    back = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    said = _back(visitor, **{**back, "iss": "https://attacker.example"})
    assert said["logged_in"] is False and "did not come from our login service" in said["error"]
    assert "POST /oauth/token" not in oidc_demo_api.output()


def test_an_id_token_for_another_nonce_is_refused(
    redis_url: str, oidc_demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    """Authlib validates the ID token: here its nonce is not the one this login sent."""
    location, params = _start(visitor)
    redirect = _typed_code(visitor, location, issue_code(api_settings(redis_url)))
    session = _session(visitor)
    session[STATE_KEY + params["state"]]["data"]["nonce"] = "another-nonce-0123456789"
    _forge(visitor, redis_url, session)
    response = visitor.get(redirect)
    assert response.status_code == 303
    said = visitor.get("/demo/session").json()
    assert said["logged_in"] is False and "could not be verified" in said["error"]
    assert "OpenID Connect login was refused" in oidc_demo_api.output()


def test_no_button_without_a_client_for_the_demo(redis_url: str, tmp_path: Path) -> None:
    """The operator's clients (none with the demo's callback), or no provider at all: the
    page offers no OpenID Connect login, and its routes are not there."""
    for env in ({}, oidc_env(tmp_path)):
        settings = api_settings(redis_url, DEMO_PAGE="1", **env)
        assert relying_party(settings) is None
        with TestClient(create_app(settings)) as client:
            assert client.get("/demo/session").json() == {"logged_in": False}
            assert client.get(OIDC_LOGIN_PATH).status_code == 404
            assert client.get(CALLBACK_PATH).status_code == 404


def test_the_clients_redirect_uri_must_be_the_callback_on_this_issuer(
    redis_url: str, tmp_path: Path
) -> None:
    env = oidc_env(tmp_path)
    elsewhere = demo_clients("http://127.0.0.1:9")  # another API's demo
    assert relying_party(api_settings(redis_url, **{**env, "OIDC_CLIENTS": elsewhere})) is None
    here = demo_clients(env["OIDC_ISSUER"])
    assert relying_party(api_settings(redis_url, **{**env, "OIDC_CLIENTS": here})) is not None


def test_a_loopback_http_issuer_needs_no_insecure_transport(
    redis_url: str, tmp_path: Path
) -> None:
    """make run's issuer is http://127.0.0.1: Authlib takes loopback as secure (RFC 8252),
    so nothing turns its https check off for other hosts."""
    for issuer in ("http://127.0.0.1:8000", "http://[::1]:8000", "http://localhost:8000"):
        env = {**oidc_env(tmp_path), "OIDC_ISSUER": issuer, "OIDC_CLIENTS": demo_clients(issuer)}
        assert relying_party(api_settings(redis_url, DEMO_PAGE="1", **env)) is not None
    assert "AUTHLIB_INSECURE_TRANSPORT" not in os.environ
    assert not is_secure_transport("http://192.0.2.10/oauth/token")


def test_an_unreachable_provider_is_a_message_not_an_error(
    redis_url: str, tmp_path: Path
) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens: discovery fails
    env = {**oidc_env(tmp_path), "OIDC_ISSUER": issuer, "OIDC_CLIENTS": demo_clients(issuer)}
    with TestClient(create_app(api_settings(redis_url, DEMO_PAGE="1", **env))) as client:
        login = client.get(OIDC_LOGIN_PATH, follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/demo"
        said = client.get("/demo/session").json()
        assert said["logged_in"] is False and "temporarily unavailable" in said["error"]
        assert client.head(OIDC_LOGIN_PATH).status_code == 405  # no HEAD starts a login
