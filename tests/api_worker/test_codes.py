"""POST /v1/codes/redeem in-process against real Redis: success, failures, body rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.fixtures.api import ANN, API_SECRET, TestClient, api_settings, issue_code
from tests.fixtures.codes import code_key as fixture_code_key
from tests.fixtures.codes import counters
from tests.fixtures.common import wait_until

INVALID_CODE = {
    "error": "invalid_code",
    "message": "The code is unknown, expired or already used.",
}


def code_key(code: str) -> str:
    settings = api_settings("redis://unused")
    assert settings.auth_secret.reveal() == API_SECRET
    return fixture_code_key(settings.auth_secret, code)


def test_redeem_returns_user_and_token(redis_url: str, client: TestClient) -> None:
    code = issue_code(api_settings(redis_url))
    response = client.post("/v1/codes/redeem", json={"code": code})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_in"}
    assert body["user"] == ANN
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 2592000
    assert isinstance(body["access_token"], str) and len(body["access_token"]) > 30
    assert code not in response.text
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"user": ANN}


@pytest.mark.parametrize("spell", ["{a} {b}", "{a}-{b}", " {a} - {b} ", "{a}\t{b}"])
def test_spaces_and_dashes_are_ignored(redis_url: str, client: TestClient, spell: str) -> None:
    code = issue_code(api_settings(redis_url))
    typed = spell.format(a=code[:4], b=code[4:])
    response = client.post("/v1/codes/redeem", json={"code": typed})
    assert response.status_code == 200, response.text


def test_second_redeem_is_invalid_code(redis_url: str, client: TestClient) -> None:
    code = issue_code(api_settings(redis_url))
    assert client.post("/v1/codes/redeem", json={"code": code}).status_code == 200
    again = client.post("/v1/codes/redeem", json={"code": code})
    assert again.status_code == 400
    assert again.json() == INVALID_CODE


def test_unknown_expired_and_used_look_the_same(redis_url: str, client: TestClient) -> None:
    settings = api_settings(redis_url)
    used = issue_code(settings)
    client.post("/v1/codes/redeem", json={"code": used})
    expired = issue_code(settings, {**ANN, "id": 2002})
    deleted = issue_code(settings, {**ANN, "id": 3003})
    with redis.Redis.from_url(redis_url) as r:
        r.pexpire(code_key(expired), 1)
        r.delete(code_key(deleted))
        wait_until(lambda: not r.exists(code_key(expired)), what="the code to expire")
    unknown = "0" * 8 if used != "0" * 8 else "1" * 8
    answers = [
        client.post("/v1/codes/redeem", json={"code": c}) for c in (used, expired, deleted, unknown)
    ]
    assert [a.status_code for a in answers] == [400] * 4
    assert {a.text for a in answers} == {answers[0].text}
    assert answers[0].json() == INVALID_CODE


@pytest.mark.parametrize("code", ["1234567", "123456789", "abcdefgh", "", "\uff11" * 8])
def test_malformed_codes_are_invalid_and_count_as_failures(
    redis_url: str, client: TestClient, code: str
) -> None:
    response = client.post("/v1/codes/redeem", json={"code": code})
    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert counters(r)["redeems_failed"] == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "JSON object"),
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"12345678"', "JSON object"),
        (b"null", "JSON object"),
        (b"{}", "code"),
        (b'{"kode": "12345678"}', "code"),
        (b'{"code": 12345678}', "string"),
        (b'{"code": null}', "string"),
        (b'{"code": ["1"]}', "string"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),  # nested past the parser's limit
    ],
)
def test_invalid_requests(client: TestClient, body: bytes, fragment: str) -> None:
    response = client.post(
        "/v1/codes/redeem", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert fragment in payload["message"]


def test_invalid_request_does_not_count_as_a_failure(redis_url: str, client: TestClient) -> None:
    client.post("/v1/codes/redeem", content=b"{}", headers={"Content-Type": "application/json"})
    with redis.Redis.from_url(redis_url) as r:
        assert "redeems_failed" not in counters(r)


def test_body_over_4_kib_by_content_length(redis_url: str, client: TestClient) -> None:
    code = issue_code(api_settings(redis_url))
    body = b'{"code": "' + code.encode() + b'", "pad": "' + b"x" * 4096 + b'"}'
    response = client.post("/v1/codes/redeem", content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    # the code was not consumed
    assert client.post("/v1/codes/redeem", json={"code": code}).status_code == 200


def test_body_of_exactly_4_kib_is_read(redis_url: str, client: TestClient) -> None:
    code = issue_code(api_settings(redis_url))
    head = b'{"code": "' + code.encode() + b'", "pad": "'
    body = head + b"x" * (4096 - len(head) - 2) + b'"}'
    assert len(body) == 4096
    json_type = {"Content-Type": "application/json"}
    assert client.post("/v1/codes/redeem", content=body, headers=json_type).status_code == 200


def test_chunked_body_over_4_kib(client: TestClient) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"code": "12345678", "pad": "'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/v1/codes/redeem", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert "content-length" not in {k.lower() for k in response.request.headers}


def test_wrong_method_and_unknown_path_use_the_error_model(client: TestClient) -> None:
    wrong = client.get("/v1/codes/redeem")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    missing = client.post("/v1/codes/12345678")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
