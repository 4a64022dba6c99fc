"""The whole system under supervisord: sandbox, Redis, API processes, bot."""

from __future__ import annotations

import httpx

from tests.fixtures.bot import ANN, IVAN, code_of
from tests.fixtures.common import wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.system import System, SystemStarter


def test_login_with_a_code_end_to_end(start_system: SystemStarter) -> None:
    system = start_system(API_PROCESSES="2")  # private Redis, sandbox, .env: all from the launcher
    assert "AUTH_SECRET=" in (system.project / ".env").read_text()

    code = system.new_code(ANN)
    redeemed = system.redeem(f"{code[:4]} {code[4:]}")
    assert redeemed.status_code == 200, redeemed.text
    body = redeemed.json()
    assert body["user"]["id"] == ANN["id"] and body["token_type"] == "Bearer"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}

    me = httpx.get(f"{system.api_url}/v1/me", headers=bearer)
    assert me.status_code == 200 and me.json()["user"]["username"] == "ann"
    assert system.redeem(code).json()["error"] == "invalid_code"  # once only

    revoked = httpx.post(f"{system.api_url}/v1/tokens/revoke", headers=bearer)
    assert revoked.status_code == 204
    after = httpx.get(f"{system.api_url}/v1/me", headers=bearer)
    assert after.status_code == 401 and after.json()["error"] == "invalid_token"

    # /logout ends what a second login made, in Russian for a Russian user
    token = system.redeem(system.new_code(IVAN)).json()["access_token"]
    assert "1" in system.ask("/logout", IVAN)["text"]
    assert httpx.get(
        f"{system.api_url}/v1/me", headers={"Authorization": f"Bearer {token}"}
    ).status_code == 401


def test_two_api_processes_share_one_socket(start_system: SystemStarter) -> None:
    system = start_system(API_PROCESSES="2", BOT_PROCESSES="1")
    processes = system.processes()
    assert sorted(processes) == [
        "api:api-0", "api:api-1", "bot:bot-0", "redis:redis", "sandbox:sandbox"
    ]
    assert {p["statename"] for p in processes.values()} == {"RUNNING"}, processes
    supervisor = system.supervisor()
    for serving, stopped in (("api-0", "api-1"), ("api-1", "api-0")):
        supervisor.stopProcess(f"api:{stopped}")
        # with only `serving` left on the shared socket, it answers everything
        for _ in range(20):
            assert httpx.get(f"{system.api_url}/readyz").status_code == 200
        assert system.processes()[f"api:{serving}"]["statename"] == "RUNNING"
        supervisor.startProcess(f"api:{stopped}")
    assert "Traceback" not in system.output()


def test_redis_outage_and_recovery_without_restarts(
    start_system: SystemStarter, redis_server: RedisServer, redis_url: str
) -> None:
    system = start_system(REDIS_URL=redis_url, API_PROCESSES="2")
    assert system.redeem(system.new_code(ANN)).status_code == 200
    pids = {name: p["pid"] for name, p in system.processes().items() if p["pid"]}

    redis_server.stop()
    try:
        for _ in range(4):  # both API processes, whichever accepts
            down = system.redeem("12345678")
            assert down.status_code == 503 and down.json()["error"] == "unavailable"
            ready = httpx.get(f"{system.api_url}/readyz")
            assert ready.status_code == 503 and ready.json()["error"] == "unavailable"
        assert "temporarily unavailable" in system.ask("/code", ANN)["text"]
    finally:
        redis_server.start()

    code = wait_until(lambda: _code_or_none(system), timeout=20, what="the bot to issue again")
    assert system.redeem(code).status_code == 200
    assert httpx.get(f"{system.api_url}/readyz").status_code == 200
    after = {name: p["pid"] for name, p in system.processes().items() if p["pid"]}
    assert after == pids  # nobody was restarted


def _code_or_none(system: System) -> str | None:
    reply = system.ask("/code", ANN)
    if "temporarily unavailable" in reply["text"]:
        return None
    return code_of(reply)
