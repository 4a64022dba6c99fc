"""The published OpenAPI document matches every response: schemathesis against a live
`python -m api_worker` and its own /openapi.json, valid and invalid requests alike
(positive and negative generation), with zero server errors and zero status, content
type, header or body violations.

Run twice: an open API (no API_KEYS), and one with API_KEYS where schemathesis sends
the key (and checks that leaving it out is refused). A bounded number of examples per
operation and mode keeps each run well under a minute."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from shared.events import Events
from tests.fixtures.api import ANN, ApiStarter, api_settings, issue_code
from tests.fixtures.common import wait_until
from tests.fixtures.store import run_on_logins, run_on_store

EXAMPLES = 40  # per operation and generation mode
KEY = "schema-test-key-0123456789abcdef"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
]


def _successes(
    schema: Any, base_url: str, headers: dict[str, str], code: str, redis_url: str
) -> list[int]:
    """The success answers, which random data seldom reaches, checked the same way."""
    checks: dict[str, Any] = {"base_url": base_url, "headers": headers, "checks": CHECKS}
    redeem = schema["/v1/codes/redeem"]["POST"].Case(body={"code": code})
    redeemed = redeem.call_and_validate(**checks)
    bearer = {**headers, "Authorization": f"Bearer {redeemed.json()['access_token']}"}
    me = schema["/v1/me"]["GET"].Case().call_and_validate(**{**checks, "headers": bearer})
    created = schema["/v1/login-requests"]["POST"].Case(body={"state": "s"})
    login = created.call_and_validate(**checks).json()
    status = schema["/v1/login-requests/{id}"]["GET"].Case(path_parameters={"id": login["id"]})
    pending = status.call_and_validate(**checks)
    payload = login["deep_link"].rsplit("=", 1)[1]
    run_on_logins(api_settings(redis_url), lambda logins: logins.decide(payload, ANN, True))
    approved = status.call_and_validate(**checks)
    assert approved.json()["status"] == "approved"
    revoke = schema["/v1/tokens/revoke"]["POST"].Case()
    revoked = revoke.call_and_validate(**{**checks, "headers": bearer})
    return [r.status_code for r in (redeemed, me, pending, approved, revoked)]


def _run(base_url: str, headers: dict[str, str], checks: list[Any]) -> dict[str, int]:
    """Every operation of the live document, both modes; the statuses seen by operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    seen: dict[str, int] = {}
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategies.append((mode, operation.as_strategy(generation_mode=mode)))

    for mode, strategy in strategies:

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=base_url, headers=headers, checks=checks, timeout=10
            )
            key = f"{case.method} {case.path} {response.status_code}"
            seen[key] = seen.get(key, 0) + 1

        try:
            conforms()
        except Unsatisfiable:
            # nothing to make invalid (no parameters, no body): no negative cases
            assert mode is schemathesis.GenerationMode.NEGATIVE
    return seen


@pytest.mark.timeout(180)
@pytest.mark.parametrize("keys", [False, True], ids=["open", "api-keys"])
def test_every_response_matches_the_published_document(
    redis_url: str, start_api: ApiStarter, keys: bool
) -> None:
    env = {"TELEGRAM_BOT_USERNAME": "schema_test_bot", "LOGIN_REQUEST_LIMIT": "1000000"}
    if keys:
        # ignored_auth leaves the key out on purpose: refused 401 each time, never 429
        env.update(API_KEYS=f"shop:{KEY}", API_KEY_FAIL_LIMIT="1000000")
    api = start_api(**env)
    headers = {"X-API-Key": KEY} if keys else {}
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    code = issue_code(api_settings(redis_url))
    assert _successes(schema, api.url, headers, code, redis_url) == [200, 200, 200, 200, 204]
    # GET /v1/events holds `wait` seconds while nothing came after `after`: with an event
    # of this client delivered, any `after` the examples name answers at once
    run_on_store(api_settings(redis_url), lambda store: Events(store.redis).emit(
        ANN["id"], "code.redeemed", "shop" if keys else "", {"user": ANN}
    ))
    wait_until(lambda: httpx.get(f"{api.url}/v1/events", headers=headers).json()["events"],
               timeout=20, what="the event in the pull stream")
    checks = [*CHECKS, ignored_auth] if keys else CHECKS
    seen = _run(api.url, headers, checks)
    print("\n".join(f"{n:4d} {k}" for k, n in sorted(seen.items())))
    assert all(not key.endswith(" 500") for key in seen)
    assert "Traceback" not in api.output()


def test_the_document_uses_the_codes_own_numbers() -> None:
    """The limits the document states are the code's constants, not copies."""
    from api_worker import body, login_requests, openapi, waiters

    document = openapi.DOCUMENT
    text = str(document)
    create = document["components"]["schemas"]["LoginRequestCreate"]
    assert create["properties"]["state"]["maxLength"] == login_requests.MAX_STATE
    wait = document["paths"]["/v1/login-requests/{id}"]["get"]["parameters"][1]["schema"]
    assert wait["maximum"] == waiters.MAX_WAIT
    assert f"{body.MAX_BODY_BYTES} bytes" in text
    assert document["info"]["version"] == openapi.VERSION
