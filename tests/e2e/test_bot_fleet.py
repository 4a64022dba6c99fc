"""The bot fleet as `make run` runs it under supervisord: three leased pollers and
their takeovers, and webhook mode with the code and deep-link flows end to end."""

from __future__ import annotations

import contextlib
import os
import signal
import xmlrpc.client
from typing import Any

import httpx
import redis

from sandbox.launch import SANDBOX_TOKEN
from shared import keys
from tests.fixtures.bot import ANN, Message, buttons, code_of
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.system import System, SystemStarter

TAKEOVER = 15.0  # seconds the contract gives another process to start polling
BOT_ID = int(SANDBOX_TOKEN.split(":", 1)[0])


def _user(n: int) -> Message:
    return {**ANN, "id": 4200 + n, "username": f"fleet{n}"}


def _redis(system: System) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(system.project / "var" / "redis.sock"),
                       decode_responses=True, socket_timeout=5)


def _poller(system: System, client: redis.Redis) -> str | None:
    """The supervisord name of the bot process holding the polling lease, if it runs."""
    holder = client.get(keys.poller(BOT_ID))
    if not holder:
        return None
    pid = int(str(holder).split(":")[1])
    for name, info in system.processes().items():
        if name.startswith("bot:") and info["pid"] == pid and info["statename"] == "RUNNING":
            return name
    return None


def test_three_pollers_one_at_a_time_and_takeover_until_one_is_left(
    start_system: SystemStarter,
) -> None:
    system = start_system(BOT_PROCESSES="3", CODE_ISSUE_LIMIT="100")
    bots = [name for name in system.processes() if name.startswith("bot:")]
    assert len(bots) == 3
    with _redis(system) as client:
        for round_ in range(2):
            poller = wait_until(lambda: _poller(system, client), timeout=TAKEOVER,
                                what="a running poller")
            # steady traffic: every /code answered, and the Bot API saw no 409 at all
            for n in range(5):
                code = system.new_code(_user(10 * round_ + n))
                assert system.redeem(code).status_code == 200
            assert system.sandbox.bot_summary(SANDBOX_TOKEN)["conflicts"] == 0
            pid = system.processes()[poller]["pid"]
            os.kill(pid, signal.SIGKILL)
            # kept down, so the next round has one process fewer
            with contextlib.suppress(xmlrpc.client.Fault):  # already down: fine
                system.supervisor().stopProcess(poller, True)
            gap = system.sandbox.send("/start", user=_user(100 + round_), token=SANDBOX_TOKEN)
            taken = wait_until(
                lambda killed=poller: (
                    (name := _poller(system, client)) not in (None, killed) and name
                ),
                timeout=TAKEOVER, what="another process to take the polling lease",
            )
            assert taken != poller
            reply = system.sandbox.wait_for_bot_message(
                gap["chat_id"], after=gap["message_id"], timeout=TAKEOVER, token=SANDBOX_TOKEN
            )
            assert system.redeem(code_of(reply)).status_code == 200
        running = [n for n, p in system.processes().items()
                   if n.startswith("bot:") and p["statename"] == "RUNNING"]
        assert len(running) == 1
        assert _poller(system, client) == running[0]
        assert system.redeem(system.new_code(_user(200))).status_code == 200
    assert system.proc is not None and system.proc.poll() is None


def test_webhook_mode_under_make_run_serves_codes_and_deep_links(
    start_system: SystemStarter,
) -> None:
    system = start_system(BOT_MODE="webhook", BOT_PROCESSES="2", BOT_PORT=str(free_port()))
    bots = [n for n, p in system.processes().items()
            if n.startswith("botweb:") and p["statename"] == "RUNNING"]
    assert len(bots) == 2, system.processes()
    sandbox = system.sandbox
    wait_until(lambda: sandbox.bot_summary(SANDBOX_TOKEN)["webhook_url"], timeout=20,
               what="the webhook to be set")
    # the code flow
    redeemed = system.redeem(system.new_code(ANN))
    assert redeemed.status_code == 200, redeemed.text
    # the deep-link flow
    created: dict[str, Any] = wait_until(
        lambda: (r := httpx.post(f"{system.api_url}/v1/login-requests", json={},
                                 timeout=10)).status_code == 201 and r.json(),
        timeout=20, what="a login request",
    )
    prompt = system.ask(created["start_command"], ANN)
    approve, _ = buttons(prompt)
    sandbox.tap(prompt["chat"]["id"], prompt["message_id"], approve["callback_data"],
                user=ANN, token=SANDBOX_TOKEN)
    result = httpx.get(f"{system.api_url}/v1/login-requests/{created['id']}",
                       params={"wait": 20}, timeout=30).json()
    assert result["status"] == "approved" and result["user"]["id"] == ANN["id"]
    calls = sandbox.bot_summary(SANDBOX_TOKEN)["calls"]
    assert calls.get("setwebhook") == 1, calls
    assert "getupdates" not in calls
    assert system.proc is not None and system.proc.poll() is None
