"""Redis Cluster: every flow through redis-py's real cluster client (REDIS_CLUSTER=1).

A cluster of three masters (real servers sharing the 16384 slots); bot workers and an API
worker that know only one node. Codes, tokens, /logout, the per-address and per-user
limits, deep-link logins whose held polls the bot's decision wakes (PUBLISH reaches every
node), the bot's polling lease and update ledger, and /readyz and /metrics: all through
pipelines and scripts whose keys land on different masters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster

from shared import keys
from tests.fixtures import flows
from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import ANN, AUTH_SECRET, IVAN, BotProcess, BotStarter, code_of
from tests.fixtures.common import wait_until
from tests.fixtures.redis import ClusterSet
from tests.fixtures.sandbox import make_token

KEY = "k" * 32
HEADERS = {"X-API-Key": KEY}
TAKEOVER = 15.0


@pytest.fixture
def cluster(redis_cluster: ClusterSet, cluster_env: dict[str, str]) -> Iterator[RedisCluster]:
    """The module's cluster, emptied, through redis-py's synchronous cluster client."""
    client = RedisCluster(
        host="127.0.0.1", port=redis_cluster.masters[0].port, decode_responses=True
    )
    yield client
    client.close()


def cluster_api(start_api: ApiStarter, env: dict[str, str], **extra: str) -> ApiProcess:
    return start_api(
        **env, AUTH_SECRET=AUTH_SECRET, API_KEYS=f"shop.example:{KEY}", LOG_LEVEL="DEBUG",
        **extra,
    )


def cluster_bot(start_bot: BotStarter, env: dict[str, str], **extra: str) -> BotProcess:
    return start_bot(env["REDIS_URL"], REDIS_CLUSTER="1", **extra)


def redeem(api: ApiProcess, code: str) -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/codes/redeem", json={"code": code}, headers=HEADERS, timeout=15
    )


def bearer(token: str) -> dict[str, str]:
    return {**HEADERS, "Authorization": f"Bearer {token}"}


def held_login(api: ApiProcess, bot: BotProcess, approve: bool) -> dict[str, Any]:
    """A deep-link login whose held poll the bot's Approve (or Deny) wakes."""
    return flows.held_login(api, bot, HEADERS, approve=approve)[0]


def test_codes_tokens_limits_and_logins_on_a_cluster(
    cluster: RedisCluster,
    cluster_env: dict[str, str],
    redis_cluster: ClusterSet,
    start_bot: BotStarter,
    start_api: ApiStarter,
) -> None:
    bot = cluster_bot(start_bot, cluster_env, CODE_ISSUE_LIMIT="3")
    api = cluster_api(start_api, cluster_env, REDEEM_FAIL_LIMIT="3", LOGIN_REQUEST_LIMIT="4")
    assert httpx.get(f"{api.url}/readyz", timeout=15).status_code == 200  # every primary

    # a code, its token, /v1/me, revoke
    token = redeem(api, code_of(bot.ask("/code", ANN))).json()["access_token"]
    assert httpx.get(f"{api.url}/v1/me", headers=bearer(token)).json()["user"]["id"] == ANN["id"]
    revoked = httpx.post(f"{api.url}/v1/tokens/revoke", headers=bearer(token), timeout=15)
    assert revoked.status_code == 204
    assert httpx.get(f"{api.url}/v1/me", headers=bearer(token)).status_code == 401

    # a new code ends the previous one; /logout ends every token
    first, second = code_of(bot.ask("/code", IVAN)), code_of(bot.ask("/code", IVAN))
    assert redeem(api, first).status_code == 400
    token = redeem(api, second).json()["access_token"]
    assert "1" in bot.ask("/logout", IVAN)["text"]
    assert httpx.get(f"{api.url}/v1/me", headers=bearer(token)).status_code == 401

    # limits: the user's code issues (3 in the window) and the address's failed redeems
    assert code_of(bot.ask("/code", IVAN))
    assert "слишком часто" in bot.ask("/code", IVAN)["text"]  # "too often", in Russian
    failed = [redeem(api, "0000 0000").status_code for _ in range(3)]
    assert failed[-1] == 429 and set(failed[:-1]) <= {400, 429}  # 3 failures, one above

    # deep-link logins: held polls woken by the bot's Approve and Deny, from another node
    approved = held_login(api, bot, approve=True)
    assert approved["status"] == "approved" and approved["user"]["id"] == ANN["id"]
    assert httpx.get(
        f"{api.url}/v1/me", headers=bearer(approved["access_token"])
    ).status_code == 200
    assert held_login(api, bot, approve=False)["status"] == "denied"
    creates = [
        httpx.post(f"{api.url}/v1/login-requests", json={}, headers=HEADERS).status_code
        for _ in range(3)
    ]
    assert creates[:2] == [201, 201] and creates[2] == 429  # 4 in the window

    # the counters add up across the masters; the keys really are spread over them
    metrics = httpx.get(f"{api.url}/metrics", timeout=15).text
    assert "tglogin_login_requests_approved_total 1.0" in metrics
    assert "tglogin_redis_up 1.0" in metrics
    used = [n for n, server in enumerate(redis_cluster.masters) if server.client().dbsize()]
    assert len(used) == 3, f"keys on masters {used} only"
    for log in (bot.output(), api.output()):
        assert "Traceback" not in log and "RecursionError" not in log


def test_the_polling_lease_and_update_ledger_on_a_cluster(
    cluster: RedisCluster, cluster_env: dict[str, str], start_bot: BotStarter
) -> None:
    """Two processes on one token: one polls under the lease (lease.lua), every update is
    claimed and marked handled in the ledger (update_begin.lua, a pipeline), sends go
    through the flood-limit script; a graceful stop hands the lease over (release.lua)."""
    token = make_token()
    bot_id = int(token.split(":", 1)[0])
    started = [cluster_bot(start_bot, cluster_env, token=token) for _ in range(2)]
    bots = {bot.pid: bot for bot in started}

    def holder() -> int | None:
        name = cluster.get(keys.poller(bot_id))
        return int(str(name).split(":")[1]) if name else None

    first = wait_until(lambda: holder() in bots and holder(), timeout=TAKEOVER, what="a poller")
    reply = bots[first].ask("/code", ANN)
    assert code_of(reply)

    def marks() -> set[str]:
        return {value for key in cluster.scan_iter(match=f"{keys.BOT}{{b{bot_id}}}{keys.UPDATES}*")
                for value in cluster.hvals(key)}

    # claimed, handled, marked (the mark follows the reply by a moment)
    wait_until(lambda: marks() == {"d"}, timeout=10, what="the update marked handled")
    assert cluster.zcard(keys.sends(bot_id)) >= 1  # the reply took a flood-limit slot
    assert set(cluster.hkeys(keys.live(bot_id))) >= {str(cluster.get(keys.poller(bot_id)))}

    bots[first].stop()  # SIGTERM: the lease is given back at once
    (other,) = (pid for pid in bots if pid != first)
    wait_until(lambda: holder() == other, timeout=TAKEOVER, what="the other process to poll")
    assert code_of(bots[other].ask("/code", IVAN))
    assert bots[other].output().count("polling: this process holds the lease") == 1
    for bot in bots.values():
        assert "Traceback" not in bot.output()
