"""Operations: health, readiness, metrics, the OpenAPI document, unexpected errors, Redis loss."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api_worker.app import create_app
from tests.fixtures.api import TestClient, api_settings, issue_code
from tests.fixtures.codes import code_key
from tests.fixtures.common import free_port
from tests.fixtures.redis import RedisServer


def labelled(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_healthz_and_readyz(client: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def test_metrics_show_redis_counters_and_latency_by_route(
    redis_url: str, client: TestClient
) -> None:
    code = issue_code(api_settings(redis_url))
    assert client.post("/v1/codes/redeem", json={"code": f" {code} "}).status_code == 200
    assert client.post("/v1/codes/redeem", json={"code": code}).status_code == 400
    client.get(f"/v1/codes/{code}")  # an unknown path with a code in it

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert code not in response.text
    values = samples(response.text)
    expected = {
        "tglogin_codes_issued_total": 1,
        "tglogin_codes_redeemed_total": 1,
        "tglogin_redeems_failed_total": 1,
        "tglogin_redeems_rate_limited_total": 0,
        "tglogin_code_issues_limited_total": 0,
        "tglogin_redeem_fail_alarms_total": 0,
        "tglogin_login_requests_created_total": 0,
        "tglogin_login_requests_approved_total": 0,
        "tglogin_login_requests_denied_total": 0,
        "tglogin_redis_up": 1,
    }
    for name, value in expected.items():
        assert values[(name, frozenset())] == value, name
    count = "tglogin_http_request_duration_seconds_count"
    for status in ("200", "400"):
        labels = labelled(route="/v1/codes/redeem", method="POST", status=status)
        assert values[(count, labels)] >= 1
    unmatched = labelled(route="unmatched", method="GET", status="404")
    assert values[(count, unmatched)] >= 1


SPEC_RESPONSES = {
    ("/v1/codes/redeem", "post"): {"200", "400", "401", "413", "429", "503"},
    ("/v1/me", "get"): {"200", "401"},
    ("/v1/tokens/revoke", "post"): {"204", "401"},
    ("/v1/login-requests", "post"): {"201", "400", "401", "413", "429", "503"},
    ("/v1/login-requests/{id}", "get"): {"200", "400", "401", "404", "503"},
    ("/healthz", "get"): {"200"},
    ("/readyz", "get"): {"200", "503"},
    ("/metrics", "get"): {"200"},
    ("/openapi.json", "get"): {"200"},
}


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target: Any = document
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_documents_every_endpoint_and_response(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"]
    app_paths = {route.path for route in client.app.routes}  # type: ignore[attr-defined]
    assert set(document["paths"]) == app_paths
    for (path, method), codes in SPEC_RESPONSES.items():
        operation = document["paths"][path][method]
        assert codes <= set(operation["responses"]), (path, method)
        for code, documented in operation["responses"].items():
            resolved = _resolve(document, documented)
            assert resolved["description"]
            if code.startswith(("4", "5")):
                schema = resolved["content"]["application/json"]["schema"]
                assert "#/components/schemas/Error" in set(_refs(schema)) | {schema.get("$ref")}
    redeem = document["paths"]["/v1/codes/redeem"]["post"]
    body = _resolve(document, redeem["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["code"]
    limited = _resolve(document, redeem["responses"]["429"])
    assert "Retry-After" in limited["headers"]
    login = document["paths"]["/v1/login-requests/{id}"]["get"]
    wait = next(p for p in login["parameters"] if p["name"] == "wait")
    assert (wait["schema"]["minimum"], wait["schema"]["maximum"]) == (0, 30)
    create = document["paths"]["/v1/login-requests"]["post"]
    assert "Retry-After" in _resolve(document, create["responses"]["429"])["headers"]
    ok = login["responses"]["200"]["content"]["application/json"]["schema"]
    statuses = _resolve(document, ok)
    assert {s["properties"]["status"]["const"] for s in statuses["oneOf"]} == {
        "pending", "approved", "denied"
    }
    for ref in _refs(document):
        _resolve(document, {"$ref": ref})  # every reference points somewhere


def test_unexpected_error_is_500_internal_without_traceback(
    redis_url: str, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(redis_url)
    code = issue_code(settings)
    with redis.Redis.from_url(redis_url) as r:
        key = code_key(settings.auth_secret, code)
        user, expiry, _ = r.get(key).split(b"|", 2)  # live, with a broken user record
        r.set(key, b"|".join([user, expiry, b"-", b"0", b"this is not JSON"]), keepttl=True)
    with caplog.at_level(logging.ERROR):
        response = client.post("/v1/codes/redeem", json={"code": code})
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert set(response.json()) == {"error", "message"}
    assert "Traceback" not in response.text and "JSONDecodeError" not in response.text
    logged = [r for r in caplog.records if r.name == "api_worker.errors"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "/v1/codes/redeem" in logged[0].getMessage()
    assert code not in caplog.text
    values = samples(client.get("/metrics").text)
    labels = labelled(route="/v1/codes/redeem", method="POST", status="500")
    assert values[("tglogin_http_request_duration_seconds_count", labels)] >= 1


def test_redis_down_then_back_without_restart(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    try:
        settings = api_settings(server.url)
        with TestClient(create_app(settings)) as client:
            token = client.post(
                "/v1/codes/redeem", json={"code": issue_code(settings)}
            ).json()["access_token"]
            code = issue_code(settings)
            server.stop()
            for response in (
                client.post("/v1/codes/redeem", json={"code": code}),
                client.get("/readyz"),
                client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}),
            ):
                assert response.status_code == 503
                assert response.json()["error"] == "unavailable"
            # a token that is not one of ours needs no Redis to be refused
            forged = client.get("/v1/me", headers={"Authorization": "Bearer tgl_x"})
            assert forged.status_code == 401
            assert client.get("/healthz").status_code == 200
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            values = samples(metrics.text)
            assert values[("tglogin_redis_up", frozenset())] == 0
            assert ("tglogin_codes_issued_total", frozenset()) not in values

            server.start()
            assert client.get("/readyz").status_code == 200
            code = issue_code(settings)
            assert client.post("/v1/codes/redeem", json={"code": code}).status_code == 200
            assert samples(client.get("/metrics").text)[("tglogin_redis_up", frozenset())] == 1
    finally:
        server.stop()
