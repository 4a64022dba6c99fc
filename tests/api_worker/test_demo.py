"""GET /demo, the pretend website: its server side, without a browser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from api_worker.app import create_app
from api_worker.demo import WAIT_SECONDS
from tests.fixtures.api import ANN, ApiProcess, ApiStarter, TestClient, api_settings, issue_code
from tests.fixtures.bot import ANN as TELEGRAM_ANN
from tests.fixtures.bot import Message, buttons
from tests.fixtures.common import wait_until
from tests.fixtures.demo import COOKIE, DEMO_KEY, DEMO_KEYS, DemoSystem, demo_session

JSON_POST = {"Content-Type": "application/json"}


@pytest.fixture
def demo_api(start_api: ApiStarter) -> ApiProcess:
    return start_api(DEMO_PAGE="1", API_KEYS=DEMO_KEYS)


@pytest.fixture
def visitor(demo_api: ApiProcess) -> Iterator[httpx.Client]:
    """A browser's view of the demo: cookies kept, no API key."""
    with httpx.Client(base_url=demo_api.url, timeout=40) as client:
        yield client


def _me(api: ApiProcess, token: str) -> httpx.Response:
    headers = {"X-API-Key": DEMO_KEY, "Authorization": f"Bearer {token}"}
    return httpx.get(f"{api.url}/v1/me", headers=headers, timeout=10)


def _token(visitor: httpx.Client) -> str:
    token = demo_session(visitor.cookies[COOKIE])["token"]
    assert isinstance(token, str)
    return token


@pytest.mark.parametrize(
    "path", ["/demo", "/demo/session", "/demo/static/demo.js", "/demo/login/telegram/wait"]
)
def test_demo_is_off_unless_demo_page_is_set(redis_url: str, path: str) -> None:
    with TestClient(create_app(api_settings(redis_url))) as client:
        response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_page_and_its_files_load_from_this_origin_only(redis_url: str) -> None:
    settings = api_settings(redis_url, DEMO_PAGE="1")
    with TestClient(create_app(settings)) as client:
        page = client.get("/demo")
        script = client.get("/demo/static/demo.js")
        style = client.get("/demo/static/demo.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for testid in (
        "login-telegram", "code-form", "code-input", "logout", "start-command", "login-oidc",
        "via",
    ):
        assert f'data-testid="{testid}"' in page.text
    # "Log in with OpenID Connect" is hidden until /demo/session offers it (with a client)
    assert '<div id="oidc" data-testid="oidc" hidden>' in page.text
    assert "oidc_login" in script.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, no other origin
    assert script.status_code == 200 and "/demo/login/code" in script.text
    assert style.status_code == 200


def test_a_code_logs_the_visitor_in_and_logging_out_revokes_the_token(
    redis_url: str, demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    assert visitor.get("/demo/session").json() == {"logged_in": False}
    code = issue_code(api_settings(redis_url))

    login = visitor.post("/demo/login/code", json={"code": f"{code[:4]}-{code[4:]}"})
    assert login.status_code == 200, login.text
    assert login.json() == {"logged_in": True, "user": ANN}
    assert visitor.get("/demo/session").json() == {"logged_in": True, "user": ANN}
    token = _token(visitor)
    assert _me(demo_api, token).status_code == 200

    logout = visitor.post("/demo/logout", json={})
    assert logout.status_code == 200 and logout.json() == {"logged_in": False}
    revoked = _me(demo_api, token)
    assert revoked.status_code == 401 and revoked.json()["error"] == "invalid_token"
    assert visitor.get("/demo/session").json() == {"logged_in": False}


def test_a_wrong_or_used_code_gets_a_friendly_message(
    redis_url: str, visitor: httpx.Client
) -> None:
    code = issue_code(api_settings(redis_url))
    assert visitor.post("/demo/login/code", json={"code": code}).status_code == 200
    again = visitor.post("/demo/login/code", json={"code": code})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_code"
    assert "/code" in again.json()["message"]  # tells the visitor how to get a new one
    empty = visitor.post("/demo/login/code", json={"code": " "})
    assert empty.status_code == 400 and "enter the code" in empty.json()["message"]


def test_posts_must_be_json_so_no_other_site_can_forge_them(visitor: httpx.Client) -> None:
    forged = visitor.post("/demo/login/code", data={"code": "12345678"})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_request"
    assert visitor.post("/demo/logout", content=b"{}").status_code == 400


def test_a_token_revoked_elsewhere_ends_the_demo_session(
    redis_url: str, demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    visitor.post("/demo/login/code", json={"code": issue_code(api_settings(redis_url))})
    token = _token(visitor)
    headers = {"X-API-Key": DEMO_KEY, "Authorization": f"Bearer {token}"}
    assert httpx.post(f"{demo_api.url}/v1/tokens/revoke", headers=headers).status_code == 204
    state = visitor.get("/demo/session").json()
    assert state["logged_in"] is False and "ended" in state["notice"]


def test_no_api_key_reaches_the_browser(
    redis_url: str, demo_api: ApiProcess, visitor: httpx.Client
) -> None:
    responses = [
        visitor.get("/demo"),
        visitor.get("/demo/static/demo.js"),
        visitor.get("/demo/static/demo.css"),
        visitor.get("/demo/session"),
        visitor.post("/demo/login/code", json={"code": "00000000"}),
        visitor.post("/demo/login/code", json={"code": issue_code(api_settings(redis_url))}),
        visitor.get("/demo/session"),
        visitor.post("/demo/login/telegram", json={}),  # no bot here: a friendly 503
        visitor.get("/demo/login/telegram/wait"),
        visitor.post("/demo/logout", json={}),
    ]
    for response in responses:
        seen = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        assert DEMO_KEY not in seen, response.request.url
        if response.status_code >= 400:
            assert set(response.json()) == {"error", "message"}
    for cookie in visitor.cookies.jar:
        assert DEMO_KEY not in str(demo_session(cookie.value or ""))


def _tap(system: DemoSystem, prompt: Message, label: str) -> None:
    (button,) = [b for b in buttons(prompt) if label in b["text"]]
    system.sandbox.tap(
        TELEGRAM_ANN["id"], prompt["message_id"], button["callback_data"],
        user=TELEGRAM_ANN, token=system.bot.token,
    )


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_telegram_login_decided_in_the_chat(demo_system: DemoSystem, decision: str) -> None:
    """The page's long poll is answered by the decision, not by its own deadline: at that
    deadline it reads the request once more and would find the decision anyway, so the answer
    must come well before WAIT_SECONDS."""
    with (
        httpx.Client(base_url=demo_system.api.url, timeout=40) as visitor,
        ThreadPoolExecutor(1) as pool,
    ):
        started = visitor.post("/demo/login/telegram", json={})
        assert started.status_code == 200, started.text
        link = started.json()
        payload = link["start_command"].removeprefix("/start ")
        assert link["deep_link"].endswith(f"?start={payload}")
        assert link["sandbox_link"] == f"{demo_system.sandbox.url}/?start={payload}"

        # the page's long poll is waiting while the person decides
        waiting = pool.submit(_timed_get, visitor, "/demo/login/telegram/wait")
        wait_until(lambda: "login poll held" in demo_system.api.output(),
                   what="the page's long poll to be held")
        prompt = demo_system.bot.ask(link["start_command"], TELEGRAM_ANN)
        assert "Acme Shop" in prompt["text"]
        assert not waiting.done(), "the long poll must still be waiting before the tap"
        _tap(demo_system, prompt, decision)
        answer, took = waiting.result(timeout=WAIT_SECONDS + 15)  # it answers by then anyway
        assert answer.status_code == 200, answer.text
        assert took < WAIT_SECONDS - 5, (
            f"answered {took:.1f} s after it began: by its {WAIT_SECONDS} s deadline, "
            "not the decision"
        )

        if decision == "Deny":
            assert answer.json() == {"status": "denied"}
            assert visitor.get("/demo/session").json() == {"logged_in": False}
            return
        user = {k: TELEGRAM_ANN.get(k) for k in ("id", "username", "first_name")}
        assert answer.json()["status"] == "approved"
        assert {k: answer.json()["user"][k] for k in user} == user
        token = demo_session(visitor.cookies[COOKIE])["token"]
        assert demo_system.me(token) == 200
        assert visitor.post("/demo/logout", json={}).json() == {"logged_in": False}
        assert demo_system.me(token) == 401
