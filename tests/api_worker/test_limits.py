"""Guessing: the per-address failure limit and the global failed-redeem alarm."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from api_worker.app import create_app
from tests.fixtures.api import TestClient, api_settings, issue_code
from tests.fixtures.codes import counters
from tests.fixtures.common import wait_until


def test_address_over_the_failure_limit_gets_429(redis_url: str) -> None:
    settings = api_settings(redis_url, REDEEM_FAIL_LIMIT="3", REDEEM_FAIL_WINDOW_SECONDS="120")
    code = issue_code(settings)
    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    guesser = TestClient(create_app(settings), client=("203.0.113.7", 40000))
    other = TestClient(create_app(settings), client=("198.51.100.9", 40000))
    with guesser, other:
        for _ in range(3):
            assert guesser.post("/v1/codes/redeem", json={"code": wrong}).status_code == 400
        limited = guesser.post("/v1/codes/redeem", json={"code": wrong})
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limited"
        retry_after = int(limited.headers["retry-after"])
        assert 110 <= retry_after <= 120

        # even the right code is refused from that address, and it is not consumed
        right = guesser.post("/v1/codes/redeem", json={"code": code})
        assert right.status_code == 429
        assert code not in right.text
        assert other.post("/v1/codes/redeem", json={"code": code}).status_code == 200

    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        stats = counters(r)
        # Redis never holds the client address in plain text either
        assert not [k for k in r.scan_iter() if "203.0.113.7" in k]
    assert stats["redeems_failed"] == 3
    assert stats["redeems_rate_limited"] == 2
    assert stats["codes_redeemed"] == 1


def test_global_failure_rate_raises_one_alarm(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(redis_url, REDEEM_FAIL_ALARM_PER_MINUTE="3", REDEEM_FAIL_LIMIT="1000")
    # the alarm counts per clock minute: start well inside one
    wait_until(lambda: time.time() % 60 < 50, timeout=15, what="the start of a minute")
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        for _ in range(5):
            response = client.post("/v1/codes/redeem", json={"code": "9" * 7})
            assert response.status_code == 400
        metrics = client.get("/metrics").text
    alarms = [r for r in caplog.records if r.levelno == logging.ERROR and "ALARM" in r.getMessage()]
    assert len(alarms) == 1
    assert "tglogin_redeem_fail_alarms_total 1.0" in metrics.splitlines()
    assert "tglogin_redeems_failed_total 5.0" in metrics.splitlines()
