"""The log of a real API process: query strings redacted in the access log, and no login
request id anywhere, whichever way a request names it (the API's own clients, the demo's
server side, HEAD, OPTIONS, a trailing slash, another spelling of the path)."""

from __future__ import annotations

import logging
import re

import httpx

from api_worker.logs import RedactingFormatter
from tests.fixtures.api import ANN, ApiStarter, api_settings
from tests.fixtures.common import wait_until
from tests.fixtures.demo import COOKIE, demo_session
from tests.fixtures.store import run_on_logins

BOT = "tglogin_test_bot"
SECRET_QUERY = "tgl_thisMustNeverBeLogged0123456789"


def approve(redis_url: str, deep_link: str) -> None:
    match = re.search(r"start=([A-Za-z0-9_-]+)", deep_link)
    assert match, deep_link
    settings = api_settings(redis_url)
    run_on_logins(settings, lambda logins: logins.decide(match.group(1), ANN, True))


def test_access_log_redacts_queries_and_login_request_ids(
    redis_url: str, start_api: ApiStarter
) -> None:
    api = start_api(LOG_LEVEL="DEBUG", TELEGRAM_BOT_USERNAME=BOT, DEMO_PAGE="1")
    ids: list[str] = []
    with httpx.Client(base_url=api.url, timeout=30) as client:
        assert client.get(f"/v1/me?access_token={SECRET_QUERY}").status_code == 401
        assert client.get("/healthz", params={"token": SECRET_QUERY}).status_code == 200

        created = client.post("/v1/login-requests", json={}).json()
        login_id = created["id"]
        ids.append(login_id)
        for path in (
            f"/v1/login-requests/{login_id}?wait=1",  # held, then pending (a DEBUG line)
            f"/v1/login-requests/{login_id}?wait=0&access_token={SECRET_QUERY}",
            f"/v1/login-requests/{login_id}/",  # redirected to the path without the slash
            f"/V1/LOGIN-REQUESTS/{login_id}",  # no such route, logged all the same
        ):
            assert client.get(path).status_code < 500
        assert client.head(f"/v1/login-requests/{login_id}").status_code == 405
        assert client.options(f"/v1/login-requests/{login_id}").status_code == 405
        approve(redis_url, created["deep_link"])
        delivered = client.get(f"/v1/login-requests/{login_id}")
        assert delivered.json()["status"] == "approved"

        # the demo website polls the API from its server side with the id in the path
        started = client.post("/demo/login/telegram", json={})
        assert started.status_code == 200, started.text
        demo_id = demo_session(client.cookies[COOKIE])["request"]
        ids.append(demo_id)
        approve(redis_url, started.json()["deep_link"])
        assert client.get("/demo/login/telegram/wait").json()["status"] == "approved"

    wait_until(lambda: "login approval delivered" in api.output(), what="the log lines")
    wait_until(
        lambda: api.output().count("/v1/login-requests/{id}?wait=25") >= 1,
        what="the demo's poll in the access log",
    )
    log = api.output()
    for login_id in ids:
        assert login_id not in log
    assert SECRET_QUERY not in log
    assert '"GET /v1/me?<redacted> HTTP/1.1" 401' in log
    assert '"GET /healthz?<redacted> HTTP/1.1" 200' in log
    assert '"GET /v1/login-requests/{id}?wait=0&<redacted> HTTP/1.1" 200' in log
    assert '"HEAD /v1/login-requests/{id} HTTP/1.1" 405' in log
    assert '"GET /v1/login-requests/{id} HTTP/1.1" 307' in log  # the slash went too
    assert "login poll held" in log  # the DEBUG lines were there to be checked


def test_the_formatter_redacts_ids_in_any_line_and_traceback() -> None:
    formatter = RedactingFormatter("%(name)s: %(message)s")
    login_id = "Q2hlY2tUaGlzSWQ0MjQy"
    try:
        raise KeyError(f"/v1/login-requests/{login_id}")
    except KeyError as exc:
        record = logging.LogRecord(
            "api_worker.demo", logging.WARNING, __file__, 1,
            "demo: the API did not answer %s %s", ("GET", f"/v1/login-requests/{login_id}"),
            (type(exc), exc, exc.__traceback__),
        )
    text = formatter.format(record)
    assert login_id not in text
    assert text.count("/v1/login-requests/{id}") >= 2  # the message and the exception


def test_queries_keep_only_what_is_no_secret() -> None:
    from api_worker.logs import redact_query

    assert redact_query("/v1/me") == "/v1/me"
    assert redact_query("/v1/me?access_token=tgl_x") == "/v1/me?<redacted>"
    assert redact_query("/x?wait=30") == "/x?wait=30"
    assert redact_query("/x?wait=30&wait=tgl_x") == "/x?wait=30&<redacted>"
    assert redact_query("/x?tgl_secret") == "/x?<redacted>"
