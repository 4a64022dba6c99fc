"""API clients: a token works only under the key of the client that obtained it; wrong
API keys are limited per address; API_KEYS refuses short keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_worker.app import create_app
from tests.fixtures.api import TestClient, api_settings, issue_code
from tests.fixtures.common import run_module

SHOP_KEY, BLOG_KEY = "shop-key-0123456789abcdefgh", "blog-key-0123456789abcdefgh"
KEYS = f"shop.example:{SHOP_KEY},blog.example:{BLOG_KEY}"
SHOP, BLOG = {"X-API-Key": SHOP_KEY}, {"X-API-Key": BLOG_KEY}


def test_a_token_works_only_under_the_key_that_obtained_it(redis_url: str) -> None:
    settings = api_settings(redis_url, API_KEYS=KEYS)
    with TestClient(create_app(settings)) as client:
        redeemed = client.post("/v1/codes/redeem", json={"code": issue_code(settings)},
                               headers=SHOP)
        assert redeemed.status_code == 200, redeemed.text
        bearer = {"Authorization": f"Bearer {redeemed.json()['access_token']}"}
        for response in (
            client.get("/v1/me", headers={**BLOG, **bearer}),
            client.post("/v1/tokens/revoke", headers={**BLOG, **bearer}),
        ):
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_token"
        # the refused revoke ended nothing
        assert client.get("/v1/me", headers={**SHOP, **bearer}).status_code == 200
        assert client.post("/v1/tokens/revoke", headers={**SHOP, **bearer}).status_code == 204
        assert client.get("/v1/me", headers={**SHOP, **bearer}).status_code == 401


def test_wrong_api_keys_are_limited_per_address_and_counted(redis_url: str) -> None:
    settings = api_settings(redis_url, API_KEYS=KEYS, API_KEY_FAIL_LIMIT="5",
                            API_KEY_FAIL_WINDOW_SECONDS="300")
    guesser = TestClient(create_app(settings), client=("203.0.113.20", 40000))
    honest = TestClient(create_app(settings), client=("198.51.100.20", 40000))
    with guesser, honest:
        for n in range(5):
            wrong = {"X-API-Key": f"guess-{n:020d}"}
            assert guesser.get("/v1/me", headers=wrong).status_code == 401
        limited = guesser.get("/v1/me", headers={"X-API-Key": "guess-again-000000000000"})
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limited"
        assert 290 <= int(limited.headers["retry-after"]) <= 300
        # so is a missing key from there; the right key still works from anywhere
        assert guesser.post("/v1/codes/redeem", json={"code": "1"}).status_code == 429
        code = issue_code(settings)
        ok = guesser.post("/v1/codes/redeem", json={"code": code}, headers=SHOP)
        assert ok.status_code == 200
        assert honest.get("/v1/me", headers={"X-API-Key": "nope"}).status_code == 401
        metrics = honest.get("/metrics").text
    assert "tglogin_api_key_failures_total 8.0" in metrics.splitlines()


def test_a_short_api_key_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_module(
        "api_worker", {"AUTH_SECRET": "s" * 40, "API_KEYS": "shop:short-key"}, tmp_path
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("api_worker: configuration error: API_KEYS")
    assert "24" in line and "short-key" not in line


def test_an_auth_secret_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    result = run_module("api_worker", {"AUTH_SECRET": "s" * 40 + "\udcff"}, tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == "api_worker: configuration error: AUTH_SECRET must be valid UTF-8 text"


@pytest.mark.parametrize("path", ["/v1/codes/redeem", "/v1/login-requests"])
@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; b=x"],
)
def test_a_body_that_is_not_declared_json_is_refused_and_spends_nothing(
    redis_url: str, path: str, content_type: str | None
) -> None:
    """A cross-site form can post text/plain or a form, never JSON: it cannot burn a
    visitor's failure budget or create login requests in their name."""
    settings = api_settings(redis_url, REDEEM_FAIL_LIMIT="1", TELEGRAM_BOT_USERNAME="b")
    headers = {"Content-Type": content_type} if content_type else {}
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            response = client.post(path, content=b'{"code": "00000000"}', headers=headers)
            assert response.status_code == 415, response.text
            assert response.json()["error"] == "unsupported_media_type"
        code = issue_code(settings)
        # the budget is untouched: the address may still fail once, then redeem
        assert client.post("/v1/codes/redeem", json={"code": code}).status_code == 200
        assert client.post(path, json={}).status_code in (400, 201)
        vendor = {"Content-Type": "application/vnd.api+json; charset=utf-8"}
        assert client.post(path, content=b"{}", headers=vendor).status_code in (400, 201)
