"""A stalled Redis: alive but silent (SIGSTOP), then resumed (SIGCONT).

The server accepts connections and never answers, the failure that retries and socket
timeouts stretch the most. With REDIS_TIMEOUT=2 every API request answers 503
`unavailable` within a bounded time (a burst larger than the connection pool, /readyz,
and a `?wait=` poll held since before the stall included), /metrics still answers, the
bot says "temporarily unavailable"; no traceback and no RecursionError in any log; after
SIGCONT everything works again in the same processes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.oidc_grants import oidc_client_tag
from shared.settings import Secret
from shared.tokens import Claims, new_token_id, seal
from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, buttons, code_of
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.oidc import CHALLENGE, SHOP, SHOP_SECRET, VERIFIER, oidc_env
from tests.fixtures.redis import RedisServer, kill

TIMEOUT = 2  # REDIS_TIMEOUT of both workers
# an answer's bound: the deadline plus generous room (a held poll first notices the stall
# with a ping unanswered for the deadline, then reads once more: about 1 s + 2 deadlines)
BOUND = TIMEOUT + 8.0
KEY = "k" * 32
HEADERS = {"X-API-Key": KEY}
BURST = 80  # concurrent requests, more than the 64 connections a process keeps
Timed = tuple[httpx.Response, float, float]  # the answer, how long it took, when it came


@pytest.fixture
def stalled_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, which it stops; always resumed and killed after."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "stalled")
    server.start()
    try:
        yield server
    finally:
        kill(server)  # SIGCONT first


def timed(call: Callable[[], httpx.Response]) -> Timed:
    started = time.monotonic()
    response = call()
    ended = time.monotonic()
    return response, ended - started, ended


def bearer(token: str) -> dict[str, str]:
    return {**HEADERS, "Authorization": f"Bearer {token}"}


def hold_poll(pool: ThreadPoolExecutor, api: ApiProcess) -> tuple[dict[str, Any], Future[Timed]]:
    """A new login request, and its poll held (`wait=30`) in `pool`."""
    created = httpx.post(f"{api.url}/v1/login-requests", json={}, headers=HEADERS, timeout=15)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    held_before = api.output().count("login poll held")
    held = pool.submit(
        timed,
        lambda: httpx.get(
            f"{api.url}/v1/login-requests/{body['id']}", params={"wait": 30},
            headers=HEADERS, timeout=60,
        ),
    )
    wait_until(lambda: api.output().count("login poll held") > held_before, what="a held poll")
    return body, held


def _oidc_access_token() -> str:
    """An OpenID Connect access token sealed as the provider seals one (for a user who
    never logged in): only Redis can say whether it counts."""
    secret = Secret(AUTH_SECRET)
    return seal(secret, Claims(ANN["id"], int(time.time()) + 600, 0, new_token_id(),
                               oidc_client_tag(secret, "shop", True)))


def requests_while_stalled(api: ApiProcess, token: str) -> dict[str, Callable[[], httpx.Response]]:
    url, t = api.url, 15 + BOUND  # the client's own timeout is never what ends a request
    shop = ("shop", SHOP_SECRET)
    return {
        # a program's Accept: the JSON error model (a browser gets the same as a page)
        "oidc authorize": lambda: httpx.get(f"{url}/oauth/authorize", params={
            "response_type": "code", "client_id": "shop", "scope": "openid",
            "redirect_uri": SHOP["redirect_uris"][0], "code_challenge": CHALLENGE,
            "code_challenge_method": "S256"}, timeout=t),
        "oidc page wait": lambda: httpx.post(
            f"{url}/oauth/authorize/wait", json={"id": "q3J" + "x" * 19}, timeout=t),
        "oidc token": lambda: httpx.post(f"{url}/oauth/token", auth=shop, timeout=t, data={
            "grant_type": "authorization_code", "code": "A" * 54,
            "redirect_uri": SHOP["redirect_uris"][0], "code_verifier": VERIFIER}),
        "oidc userinfo": lambda: httpx.get(f"{url}/oauth/userinfo", timeout=t, headers={
            "Authorization": f"Bearer {_oidc_access_token()}"}),
        "create approval": lambda: httpx.post(
            f"{url}/v1/approvals", json={"user_id": ANN["id"], "text": "Confirm order #1"},
            headers=HEADERS, timeout=t),
        "poll approval": lambda: httpx.get(
            f"{url}/v1/approvals/{ANN['id']}.q3J{'x' * 19}", params={"wait": 30},
            headers=HEADERS, timeout=t),
        "pull events": lambda: httpx.get(
            f"{url}/v1/events", params={"wait": 30}, headers=HEADERS, timeout=t),
        "oidc revoke": lambda: httpx.post(f"{url}/oauth/revoke", auth=shop, timeout=t,
                                          data={"token": _oidc_access_token()}),
        "readyz": lambda: httpx.get(f"{url}/readyz", timeout=t),
        "redeem": lambda: httpx.post(
            f"{url}/v1/codes/redeem", json={"code": "1234 5678"}, headers=HEADERS, timeout=t
        ),
        "me": lambda: httpx.get(f"{url}/v1/me", headers=bearer(token), timeout=t),
        "revoke": lambda: httpx.post(f"{url}/v1/tokens/revoke", headers=bearer(token), timeout=t),
        "create login": lambda: httpx.post(
            f"{url}/v1/login-requests", json={}, headers=HEADERS, timeout=t
        ),
        "poll login": lambda: httpx.get(
            f"{url}/v1/login-requests/q3Jxxxxxxxxxxxxxxxxxxx", params={"wait": 30},
            headers=HEADERS, timeout=t,
        ),
    }


def test_a_stalled_redis_is_503_within_bounds_and_everything_recovers(
    stalled_server: RedisServer, start_bot: BotStarter, start_api: ApiStarter, tmp_path: Path
) -> None:
    redis_env = {"REDIS_URL": stalled_server.url, "REDIS_TIMEOUT": str(TIMEOUT)}
    bot: BotProcess = start_bot(stalled_server.url, REDIS_TIMEOUT=str(TIMEOUT))
    api = start_api(
        **redis_env, AUTH_SECRET=AUTH_SECRET, API_KEYS=f"shop.example:{KEY}", LOG_LEVEL="DEBUG",
        **oidc_env(tmp_path),
    )
    pids = (bot.pid, api.proc.pid if api.proc else None)
    code = code_of(bot.ask("/code", ANN))
    redeemed = httpx.post(
        f"{api.url}/v1/codes/redeem", json={"code": code}, headers=HEADERS, timeout=15
    )
    token = redeemed.json()["access_token"]
    wait_until(lambda: "listening for login decisions" in api.output(), what="the listener")
    assert stalled_server.proc is not None

    with ThreadPoolExecutor(BURST + 16) as pool:
        _, held = hold_poll(pool, api)
        stalled_server.proc.send_signal(signal.SIGSTOP)
        stalled = time.monotonic()
        try:
            calls = requests_while_stalled(api, token)
            answers = {name: pool.submit(timed, call) for name, call in calls.items()}
            burst = [pool.submit(timed, calls["me"]) for _ in range(BURST)]
            metrics = pool.submit(timed, lambda: httpx.get(f"{api.url}/metrics", timeout=30))
            sent = bot.send("/code", ANN)
            reply = bot.sandbox.wait_for_bot_message(
                sent["chat_id"], after=sent["message_id"], timeout=TIMEOUT * 3 + 14,
                token=bot.token,
            )
            bot_took = time.monotonic() - stalled
            held_response, _, held_ended = held.result(timeout=60)
            held_took = held_ended - stalled  # since the stall, not since the poll began
            finished = {name: answer.result(timeout=60) for name, answer in answers.items()}
            finished.update({f"me #{n}": f.result(timeout=60) for n, f in enumerate(burst)})
            scraped, scrape_took, _ = metrics.result(timeout=60)
        finally:
            stalled_server.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()

    assert "temporarily unavailable" in reply["text"], reply
    assert held_response.status_code == 503 and held_response.json()["error"] == "unavailable"
    assert held_took < BOUND, f"the held poll answered {held_took:.1f} s into the stall"
    for name, (response, took, _) in finished.items():
        assert response.status_code == 503, (name, response.text)
        assert response.json()["error"] == "unavailable", name
        assert took < BOUND, f"{name} took {took:.1f} s"
    assert scraped.status_code == 200 and "tglogin_redis_up 0.0" in scraped.text
    assert scrape_took < BOUND
    slowest = max(took for _, took, _ in finished.values())
    print(
        f"stalled (REDIS_TIMEOUT={TIMEOUT}): {len(finished)} requests 503 in at most "
        f"{slowest:.1f} s, a poll held since before the stall at {held_took:.1f} s, "
        f"/metrics in {scrape_took:.1f} s, the bot's answer at {bot_took:.1f} s"
    )

    # resumed: the same processes serve every flow again
    wait_until(
        lambda: httpx.get(f"{api.url}/readyz", timeout=15).status_code == 200,
        timeout=15, what="/readyz after SIGCONT",
    )
    code = wait_until(
        lambda: (reply := bot.ask("/code", ANN)) and "entities" in reply and code_of(reply),
        timeout=30, what="a code after SIGCONT",
    )
    redeemed = httpx.post(
        f"{api.url}/v1/codes/redeem", json={"code": code}, headers=HEADERS, timeout=15
    )
    assert redeemed.status_code == 200, redeemed.text
    assert httpx.get(f"{api.url}/v1/me", headers=bearer(token)).status_code == 200
    wait_until(
        lambda: api.output().count("listening for login decisions") >= 2,
        timeout=15, what="the listener to subscribe again",
    )
    with ThreadPoolExecutor(1) as pool:
        body, held = hold_poll(pool, api)
        prompt = bot.ask(body["start_command"], ANN)
        approve = buttons(prompt)[0]["callback_data"]
        bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], approve, ANN, bot.token)
        answer, took, _ = held.result(timeout=60)
    assert answer.status_code == 200 and answer.json()["status"] == "approved"
    assert took < 20, "the held poll was answered by its deadline, not the tap"
    print(f"resumed: every flow back {time.monotonic() - resumed:.1f} s after SIGCONT")

    assert bot.running() and api.running()
    assert (bot.pid, api.proc.pid if api.proc else None) == pids
    for log in (bot.output(), api.output()):
        assert "Traceback" not in log and "RecursionError" not in log
        assert "Task exception was never retrieved" not in log
