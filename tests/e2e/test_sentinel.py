"""Redis Sentinel: the workers find the master through three sentinels and follow a failover.

A master, its replica and three sentinels (real servers); a bot worker and an API worker
configured with REDIS_SENTINELS. Codes, tokens and a deep-link login whose held poll the
bot's decision wakes work; the master is killed (-9), the sentinels promote the replica,
and the same processes (same pids, never restarted) serve codes, tokens and wake-ups again
within 30 s, tokens issued before the failover included.
"""

from __future__ import annotations

import time

import httpx
import redis

from tests.fixtures import flows
from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, code_of
from tests.fixtures.common import wait_until
from tests.fixtures.redis import SentinelSet, kill

KEY = "k" * 32
HEADERS = {"X-API-Key": KEY}
RECOVERY = 30.0  # seconds from the kill until every flow works again


def new_code(bot: BotProcess) -> str | None:
    """A code from the bot, or None while it answers "temporarily unavailable"."""
    reply = bot.ask("/code", ANN)
    if "temporarily unavailable" in reply["text"]:
        return None
    return code_of(reply)


def redeem(api: ApiProcess, code: str) -> str:
    response = httpx.post(
        f"{api.url}/v1/codes/redeem", json={"code": code}, headers=HEADERS, timeout=15
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def me(api: ApiProcess, token: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/v1/me", headers={**HEADERS, "Authorization": f"Bearer {token}"}, timeout=15
    )


def held_login(api: ApiProcess, bot: BotProcess) -> float:
    """A deep-link login whose held poll the bot's Approve wakes; how long the poll took."""
    answer, took = flows.held_login(api, bot, HEADERS)
    assert answer["status"] == "approved"
    assert me(api, answer["access_token"]).status_code == 200
    return took


def test_codes_tokens_and_wake_ups_survive_a_failover(
    sentinel_set: SentinelSet, start_bot: BotStarter, start_api: ApiStarter
) -> None:
    env = sentinel_set.env
    topology = {k: v for k, v in env.items() if k != "REDIS_URL"}
    bot = start_bot(env["REDIS_URL"], **topology)
    api = start_api(
        **env, AUTH_SECRET=AUTH_SECRET, API_KEYS=f"shop.example:{KEY}", LOG_LEVEL="DEBUG"
    )
    pids = (bot.pid, api.proc.pid if api.proc else None)

    # every flow through the sentinels' master
    code = wait_until(lambda: new_code(bot), timeout=30, what="a code from the bot")
    token_before = redeem(api, code)
    assert me(api, token_before).json()["user"]["username"] == "ann"
    wait_until(lambda: "listening for login decisions" in api.output(), what="the listener")
    held_login(api, bot)

    # the replica has everything so far; then the master dies
    with redis.Redis(port=sentinel_set.master.port) as master:
        assert master.execute_command("WAIT", 1, 5000) == 1
    killed = time.monotonic()
    kill(sentinel_set.master)
    wait_until(
        lambda: sentinel_set.current_master() == sentinel_set.replica.port,
        timeout=RECOVERY, what="the sentinels to promote the replica",
    )
    promoted = time.monotonic() - killed

    # the same processes: codes, tokens (the old one too) and wake-ups on the new master
    code = wait_until(
        lambda: new_code(bot), timeout=RECOVERY, what="a code from the bot after the failover"
    )
    codes_back = time.monotonic() - killed
    token_after = redeem(api, code)
    assert me(api, token_after).status_code == 200
    assert me(api, token_before).json()["user"]["username"] == "ann"
    wait_until(
        lambda: api.output().count("listening for login decisions") >= 2,
        timeout=RECOVERY, what="the listener to subscribe on the new master",
    )
    took = held_login(api, bot)
    recovered = time.monotonic() - killed
    assert recovered < RECOVERY, f"every flow back only {recovered:.1f} s after the kill"
    print(
        f"failover: replica promoted {promoted:.1f} s after the kill, codes back at "
        f"{codes_back:.1f} s, every flow (a held poll woken in {took:.1f} s) at {recovered:.1f} s"
    )

    assert bot.running() and api.running()
    assert (bot.pid, api.proc.pid if api.proc else None) == pids  # nobody was restarted
    for log in (bot.output(), api.output()):
        assert "Traceback" not in log and "RecursionError" not in log
