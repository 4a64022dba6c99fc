"""Bad input never reaches a 500: text that is not UTF-8 is 400 `invalid_request` in every
field of every endpoint, HEAD changes nothing, OPTIONS and odd methods get a clean answer.

In-process app on the test's Redis for the field matrix; a real `python -m api_worker`
for what only uvicorn sees (raw bytes in the request line and headers)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from api_worker.app import create_app
from shared.settings import Settings
from tests.fixtures.api import ANN, ApiStarter, TestClient, api_settings, issue_code
from tests.fixtures.store import run_on_logins

BOT = "tglogin_test_bot"
JSON = {"Content-Type": "application/json"}

# bodies whose strings no UTF-8 encoder takes (lone surrogates, spelled as JSON escapes),
# or that are not UTF-8 at all (a stray byte, a truncated sequence, an encoded surrogate)
BAD_BODIES = {
    "/v1/codes/redeem": [
        b'{"code": "\\ud800"}',
        b'{"code": "\\udfff"}',
        b'{"code": "1234\\ud83d5678"}',
        b'{"code": "12345678", "\\ud800": 1}',
        b'{"code": "\xff"}',
        b'{"code": "\xc3"}',
        b'{"code": "\xed\xa0\x80"}',
    ],
    "/v1/login-requests": [
        b'{"state": "\\ud800"}',
        b'{"state": "ok\\udfff"}',
        b'{"\\udc00": "x"}',
        b'{"state": "\xff"}',
        b'{"state": "\xed\xa0\x80"}',
    ],
    "/demo/login/code": [b'{"code": "\\ud800"}', b'{"code": "\xff"}'],
}
# every route of the API with a URL that percent-encodes bytes that are not UTF-8
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/me"),
    ("POST", "/v1/tokens/revoke"),
    ("POST", "/v1/codes/redeem"),
    ("POST", "/v1/login-requests"),
    ("GET", "/v1/login-requests/abc"),
    ("GET", "/demo"),
    ("GET", "/demo/session"),
    ("GET", "/demo/login/telegram/wait"),
]
BAD_URL_PARTS = ["%FF", "%ED%A0%80", "%C3", "%F4%90%80%80"]


def settings_for(redis_url: str, **env: str) -> Settings:
    return api_settings(redis_url, TELEGRAM_BOT_USERNAME=BOT, DEMO_PAGE="1", **env)


@pytest.fixture
def app_client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(redis_url)), raise_server_exceptions=False) as c:
        yield c


def assert_invalid_request(response: Any) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.json()["error"] == "invalid_request", response.text


@pytest.mark.parametrize(
    ("path", "body"), [(path, body) for path, bodies in BAD_BODIES.items() for body in bodies]
)
def test_text_that_is_not_utf8_in_a_body_is_400(
    redis_url: str, app_client: TestClient, path: str, body: bytes
) -> None:
    assert_invalid_request(app_client.post(path, content=body, headers=JSON))
    with redis.Redis.from_url(redis_url) as store:
        assert not [k for k in store.scan_iter("tgl:login*")], "nothing may be stored"


def test_a_lone_surrogate_never_burns_a_code(redis_url: str, app_client: TestClient) -> None:
    code = issue_code(settings_for(redis_url))
    spoiled = '{"code": "' + code + '\\ud800"}'
    assert_invalid_request(app_client.post("/v1/codes/redeem", content=spoiled, headers=JSON))
    assert app_client.post("/v1/codes/redeem", json={"code": code}).status_code == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("bad", BAD_URL_PARTS)
def test_bytes_that_are_not_utf8_in_a_url_are_400(
    app_client: TestClient, method: str, path: str, bad: str
) -> None:
    in_query = app_client.request(method, f"{path}?wait={bad}", headers=JSON, content=b"{}")
    assert_invalid_request(in_query)
    in_path = app_client.request(method, f"{path}{bad}", headers=JSON, content=b"{}")
    assert_invalid_request(in_path)


def test_utf8_in_a_url_is_still_text(app_client: TestClient) -> None:
    assert app_client.get("/healthz?note=%C3%A9t%C3%A9+%F0%9F%99%82").status_code == 200
    unknown = app_client.get("/v1/login-requests/%C3%A9t%C3%A9")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"


def _approved_request(redis_url: str, client: TestClient) -> str:
    created = client.post("/v1/login-requests", json={"state": "s"}).json()
    match = re.search(r"start=([A-Za-z0-9_-]+)", created["deep_link"])
    assert match
    settings = settings_for(redis_url)
    run_on_logins(settings, lambda logins: logins.decide(match.group(1), ANN, True))
    return str(created["id"])


def test_head_on_an_approved_login_request_delivers_nothing(
    redis_url: str, app_client: TestClient
) -> None:
    login_id = _approved_request(redis_url, app_client)
    url = f"/v1/login-requests/{login_id}"
    for _ in range(3):
        head = app_client.head(url)
        assert head.status_code == 405
        assert head.headers["allow"] == "GET"
        assert head.content == b""
    delivered = app_client.get(url)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["status"] == "approved" and delivered.json()["state"] == "s"
    assert app_client.get(url).status_code == 404  # delivered once, by the GET


def test_head_elsewhere_is_a_get_without_its_body(app_client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics", "/demo"):
        head = app_client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
    assert app_client.head("/v1/me").status_code == 401
    # the demo's poll hands the approval to the visitor's session: no HEAD there either
    assert app_client.head("/demo/login/telegram/wait").status_code == 405


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_options_is_a_clean_405_with_allow(app_client: TestClient, method: str, path: str) -> None:
    response = app_client.options(path)
    assert response.status_code == 405, response.text
    assert response.json()["error"] == "method_not_allowed"
    assert method in response.headers["allow"].split(", ")


def _exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` on a new connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_raw_bytes_uvicorn_sees_never_give_a_500(start_api: ApiStarter) -> None:
    api = start_api(API_KEYS="shop:" + "k" * 32, TELEGRAM_BOT_USERNAME=BOT)
    close = b"Host: api\r\nConnection: close\r\n"
    cases = {
        # not ASCII in the request target, in a header, in the bearer token, in a method
        b"GET /v1/login-requests/\xff\xfe HTTP/1.1\r\n" + close + b"\r\n": {400},
        b"GET /v1/me HTTP/1.1\r\nX-API-Key: \xff\xed\xa0\x80\r\n" + close + b"\r\n": {401},
        b"GET /v1/me HTTP/1.1\r\nX-API-Key: " + b"k" * 32 + b"\r\n"
        b"Authorization: Bearer tgl_\xff\xc3\r\n" + close + b"\r\n": {401},
        b"G\xc3T /healthz HTTP/1.1\r\n" + close + b"\r\n": {400},
        b"OPTIONS * HTTP/1.1\r\n" + close + b"\r\n": {404, 405},
        b"OPTIONS /v1/codes/redeem HTTP/1.1\r\n" + close + b"\r\n": {405},
        b"BREW /healthz HTTP/1.1\r\n" + close + b"\r\n": {405},
        b"HEAD /v1/login-requests/abc HTTP/1.1\r\n" + close + b"\r\n": {405},
    }
    for raw, expected in cases.items():
        answer = _exchange(api.port, raw)
        assert _status(answer) in expected, (raw, answer)
    assert api.running()
    assert "Traceback" not in api.output()
    assert "unexpected error" not in api.output()
