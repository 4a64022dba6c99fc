"""API keys: with API_KEYS set every /v1/* call needs X-API-Key; without, a warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from api_worker.app import create_app
from tests.fixtures.api import TestClient, api_settings, issue_code

KEYS = "shop.example:shop-key-123-0123456789abcdef,bare-key-456-0123456789abcdef"


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(redis_url, API_KEYS=KEYS))) as client:
        yield client


V1_CALLS = [
    ("POST", "/v1/codes/redeem", {"code": "12345678"}),
    ("GET", "/v1/me", None),
    ("POST", "/v1/tokens/revoke", None),
]


@pytest.mark.parametrize(("method", "path", "body"), V1_CALLS)
@pytest.mark.parametrize(
    "key",
    [
        None, "", "wrong-key", "shop.example:shop-key-123-0123456789abcdef",
        "shop-key-123-0123456789abcde",  # the right key but its last character
    ],
)
def test_v1_needs_a_valid_api_key(
    client: TestClient, method: str, path: str, body: object, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    if key:
        assert key not in response.text


@pytest.mark.parametrize("key", ["shop-key-123-0123456789abcdef", "bare-key-456-0123456789abcdef"])
def test_named_and_bare_keys_are_accepted(redis_url: str, client: TestClient, key: str) -> None:
    code = issue_code(api_settings(redis_url))
    response = client.post("/v1/codes/redeem", json={"code": code}, headers={"X-API-Key": key})
    assert response.status_code == 200
    token = response.json()["access_token"]
    auth = {"X-API-Key": key, "Authorization": f"Bearer {token}"}
    assert client.get("/v1/me", headers=auth).status_code == 200
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_api_key_is_checked_before_the_body(client: TestClient) -> None:
    response = client.post("/v1/codes/redeem", content=b"garbage")
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_operations_endpoints_need_no_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_open_api_warns_at_start(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), TestClient(create_app(api_settings(redis_url))):
        pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("API_KEYS" in r.getMessage() and "open" in r.getMessage() for r in warnings)


def test_no_warning_with_keys(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = api_settings(redis_url, API_KEYS=KEYS)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)):
        pass
    assert not [r for r in caplog.records if "API_KEYS" in r.getMessage()]
    assert "shop-key-123-0123456789abcdef" not in caplog.text
