"""GET /v1/me and POST /v1/tokens/revoke with bearer access tokens."""

from __future__ import annotations

import pytest

from tests.fixtures.api import ANN, TestClient, api_settings, issue_code


def redeem(client: TestClient, redis_url: str) -> str:
    code = issue_code(api_settings(redis_url))
    token = client.post("/v1/codes/redeem", json={"code": code}).json()["access_token"]
    assert isinstance(token, str)
    return token


def test_me_then_revoke_then_token_is_dead(redis_url: str, client: TestClient) -> None:
    token = redeem(client, redis_url)
    auth = {"Authorization": f"Bearer {token}"}
    me = client.get("/v1/me", headers=auth)
    assert me.status_code == 200
    assert me.json() == {"user": ANN}
    assert token not in me.text

    revoked = client.post("/v1/tokens/revoke", headers=auth)
    assert revoked.status_code == 204
    assert revoked.content == b""

    for response in (
        client.get("/v1/me", headers=auth),
        client.post("/v1/tokens/revoke", headers=auth),
    ):
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert token not in response.text


def test_revoking_one_token_keeps_the_others(redis_url: str, client: TestClient) -> None:
    first, second = redeem(client, redis_url), redeem(client, redis_url)
    client.post("/v1/tokens/revoke", headers={"Authorization": f"Bearer {first}"})
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {second}"}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token tgl_abc",
        "Bearer tgl_a tgl_b",
        "Bearer tgl_unknown_token_value",
        "Bearer " + "x" * 1000,
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/me"), ("POST", "/v1/tokens/revoke")])
def test_missing_malformed_or_unknown_token(
    client: TestClient, method: str, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_token"
    assert set(body) == {"error", "message"}
    assert response.headers["www-authenticate"].startswith("Bearer")
    if header and len(header) > 8:
        assert header.split(" ", 1)[-1] not in response.text


def test_bearer_scheme_is_case_insensitive(redis_url: str, client: TestClient) -> None:
    token = redeem(client, redis_url)
    assert client.get("/v1/me", headers={"Authorization": f"bearer {token}"}).status_code == 200
