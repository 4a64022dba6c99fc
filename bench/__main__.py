"""`python -m bench` (`make bench`): one run, one table, `bench-results.json`.

Order: the load generator's own ceiling; Redis memory per code (100,000 codes of
100,000 users, which the redeem run then spends); the bare endpoint and the product's
redeem and /v1/me on the same uvicorn settings (1 process, 64 connections, distinct
X-Forwarded-For addresses); wake-ups; Redis round trips through a counting proxy; the
bot against a bare bot on one sandbox with its flood limits off.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench import deployed, load, measure, report
from bench.services import (
    free_port,
    server_stack,
    start_api,
    start_bot,
    start_module,
    start_redis,
    start_sandbox,
)
from shared.settings import Settings
from shared.store import Store
from tests.fixtures.common import ROOT, port_open, wait_until

CODES = 100_000  # issued for the memory figure, then spent by the redeem run
CODES_1M = 1_000_000  # the memory figure again, and a redeem run among them
SMALL = 10_000  # the population a redeem run among a million is compared with
TOKENS = 50_000  # redeemed for the memory a live access token keeps
SECONDS = 8  # each load run
WARMUP_SECONDS = 2
CONNECTIONS = 64
BOT_UPDATES = 1_500
APPROVALS = 200
RESULTS = ROOT / "bench-results.json"

NOT_MEASURED: dict[str, str] = {}


def _stack() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        **{name: version(name) for name in (
            "uvicorn", "starlette", "h11", "httptools", "uvloop", "redis",
            "python-telegram-bot", "httpx",
        )},
        "cpus": os.cpu_count(),
    }


def _phase(name: str) -> None:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)


def _bodies(codes: list[str]) -> list[str]:
    return [json.dumps({"code": code}) for code in codes]


def run(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"generator": load.generator(), "stack": _stack()}
    if results["generator"] == "wrk":
        results["stack"]["wrk"] = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    results["settings"] = {
        "connections": CONNECTIONS, "threads": 1, "seconds": SECONDS,
        "warmup_seconds": WARMUP_SECONDS, "api_processes": 1, "log_level": "INFO",
        "forwarded_allow_ips": "127.0.0.1", "distinct_x_forwarded_for": True,
        "codes": CODES, "bot_updates": BOT_UPDATES, "approvals": APPROVALS,
        "bot_send_rate": 100_000, "sandbox_limits": "send_rate 0, chat_burst 0",
        "redis": "private valkey/redis from sandbox.redis_server.server_args (AOF on)",
    }
    with ExitStack() as stack:
        server = start_redis(workdir)
        stack.callback(server.stop)
        redis_url = server.url
        settings = measure.settings_for(redis_url)
        with server.client() as client:
            info = client.info("server")
        results["stack"]["redis_server"] = (
            f"{info.get('server_name', 'redis')} "
            f"{info.get('valkey_version') or info.get('redis_version')}")

        _phase("generator ceiling against a trivial endpoint")
        trivial_port = free_port()
        trivial = start_module("bench.trivial_server", {}, workdir / "trivial.log",
                               str(trivial_port), port=trivial_port)
        stack.callback(trivial.stop)
        wait_until(lambda: port_open(trivial_port), what="the trivial server")
        body = _bodies(["12345678"])
        results["generator_ceiling_rps"] = load.run(
            trivial.url, "/", body, seconds=SECONDS / 2, connections=CONNECTIONS,
            workdir=workdir).rps
        trivial.stop()

        _phase(f"memory: issuing {CODES:,} codes of {CODES:,} users")
        with server.client() as client:
            per_code, codes, issue_rps = measure.memory_per_code(settings, client, CODES, 1)
        results["bytes_per_code"] = round(per_code, 1)
        results["issue_rps"] = round(issue_rps)
        warm, spend = codes[50:20_050], codes[20_050:]

        _phase("bare Starlette endpoint")
        bare = start_api("bench.bare_api", redis_url, workdir, "bare-api")
        stack.callback(bare.stop)
        results["stack"].update(server_stack(bare))  # the loop and parser it says it runs
        load.run(bare.url, "/v1/codes/redeem", _bodies(warm), seconds=WARMUP_SECONDS,
                 connections=CONNECTIONS, workdir=workdir)
        bare_run = load.run(bare.url, "/v1/codes/redeem", _bodies(spend), seconds=SECONDS,
                            connections=CONNECTIONS, workdir=workdir)
        bare.stop()

        _phase("product redeem")
        api = start_api("api_worker", redis_url, workdir, "api",
                        TELEGRAM_BOT_USERNAME="bench_bot")
        stack.callback(api.stop)
        load.run(api.url, "/v1/codes/redeem", _bodies(warm), seconds=WARMUP_SECONDS,
                 connections=CONNECTIONS, workdir=workdir)
        redeem_run = load.run(api.url, "/v1/codes/redeem", _bodies(spend), seconds=SECONDS,
                              connections=CONNECTIONS, workdir=workdir)
        results.update({
            "bare_rps": round(bare_run.rps), "bare_p50_ms": bare_run.p50_ms,
            "bare_p99_ms": bare_run.p99_ms, "bare_errors": bare_run.errors,
            "redeem_rps": round(redeem_run.rps), "redeem_p50_ms": redeem_run.p50_ms,
            "redeem_p99_ms": redeem_run.p99_ms, "redeem_errors": redeem_run.errors,
            "redeem_ratio": round(redeem_run.rps / bare_run.rps, 3),
        })

        _phase("product /v1/me")
        fresh = asyncio.run(_issue(settings, 20_000_000, 500))
        tokens = measure.redeem_for_tokens(api.url, fresh)
        me_run = load.run(api.url, "/v1/me", tokens, seconds=SECONDS, connections=CONNECTIONS,
                          workdir=workdir, method="GET")
        results.update({"me_rps": round(me_run.rps), "me_p50_ms": me_run.p50_ms,
                        "me_p99_ms": me_run.p99_ms, "me_errors": me_run.errors})

        _phase(f"wake-ups over {APPROVALS} approvals")
        results.update(measure.wake(api.url, settings, APPROVALS))

        _phase(f"memory per live access token ({TOKENS:,} redeemed)")
        with server.client() as client:
            results["bytes_per_token"] = round(
                measure.memory_per_token(settings, client, TOKENS, 70_000_000), 1)

        _phase(f"redeems among {SMALL:,} and among {CODES_1M:,} live codes")
        with server.client() as client:
            _, small, _ = measure.memory_per_code_parallel(settings, client, SMALL,
                                                           80_000_000, 2)
            measure.persistence_idle(client)
            small_run = load.run(api.url, "/v1/codes/redeem", _bodies(small), seconds=2,
                                 connections=CONNECTIONS, workdir=workdir)
            per_code_1m, million, rate_1m = measure.memory_per_code_parallel(
                settings, client, CODES_1M, 100_000_000, 2)
            measure.persistence_idle(client)
            million_run = load.run(api.url, "/v1/codes/redeem", _bodies(million[:SMALL]),
                                   seconds=2, connections=CONNECTIONS, workdir=workdir)
            client.flushall()
        results.update({
            "bytes_per_code_1m": round(per_code_1m, 1), "issue_rps_1m_2_processes": round(rate_1m),
            "redeem_rps_10k_live": round(small_run.rps), "redeem_errors_10k_live": small_run.errors,
            "redeem_rps_1m_live": round(million_run.rps),
            "redeem_errors_1m_live": million_run.errors,
            "redeem_1m_vs_10k": round(million_run.rps / small_run.rps, 3),
        })
        api.stop()

        _phase("Redis round trips through a counting proxy")
        proxy = measure.ProxyThread(server.port)
        stack.callback(proxy.close)
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        counted = start_api("api_worker", proxied, workdir, "api-proxied")
        stack.callback(counted.stop)
        spare = asyncio.run(_issue(settings, 90_000_000, 51))  # the phases before flushed
        (token,) = measure.redeem_for_tokens(counted.url, spare[50:])
        with httpx.Client(base_url=counted.url, timeout=10) as http:
            results["round_trips_redeem"] = measure.http_turns(proxy, lambda i: http.post(
                "/v1/codes/redeem", json={"code": spare[i + 1]},
                headers={"X-Forwarded-For": f"10.250.0.{i + 2}"}))
            results["round_trips_me"] = measure.http_turns(proxy, lambda i: http.get(
                "/v1/me", headers={"Authorization": f"Bearer {token}"}))
        results["round_trips_issue"] = measure.issue_turns(
            proxy, measure.settings_for(proxied), 40_000_000)
        counted.stop()

        _phase("the deployed path: supervisord, 2 API processes on one socket")
        results.update(deployed.run(workdir, redis_url))
        with server.client() as client:
            client.flushall()

        _phase(f"bots: {BOT_UPDATES} /start each")
        sandbox = start_sandbox(workdir)
        stack.callback(sandbox.stop)
        bare_bot, bare_token = start_bot("bench.bare_bot", sandbox, redis_url, workdir)
        stack.callback(bare_bot.stop)
        results["bare_bot_replies_per_s"] = round(
            measure.bot_replies_per_s(sandbox, bare_token, 50_000_000, BOT_UPDATES), 1)
        bare_bot.stop()
        bot, token = start_bot("bot_worker", sandbox, redis_url, workdir,
                               BOT_SEND_RATE="100000")
        stack.callback(bot.stop)
        results["bot_replies_per_s"] = round(
            measure.bot_replies_per_s(sandbox, token, 60_000_000, BOT_UPDATES), 1)
        results["bot_ratio"] = round(
            results["bot_replies_per_s"] / results["bare_bot_replies_per_s"], 3)
    results["not_measured"] = NOT_MEASURED
    return results


async def _issue(settings: Settings, first_uid: int, count: int) -> list[str]:
    store = Store.from_settings(settings)
    try:
        return await measure.issue_codes(store, first_uid, count)
    finally:
        await store.close()


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tglogin-bench-") as tmp:
        try:
            results = run(Path(tmp))
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} (tail)\n" + log.read_text(errors="replace")[-3000:],
                      file=sys.stderr)
            raise
    results["duration_s"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    print(f"written to {RESULTS.name} in {results['duration_s']} s")


if __name__ == "__main__":
    main()
