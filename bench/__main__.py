"""`python -m bench` (`make bench`): one run, one table, `bench-results.json`.

Order: the load generator's own ceiling; Redis memory per code (100,000 codes of
100,000 users, which the redeem run then spends); the bare endpoint and the product's
redeem and /v1/me on the same uvicorn settings (1 process, 64 connections, distinct
X-Forwarded-For addresses); wake-ups; memory per live access token; redeems among
10,000 and among 1,000,000 live codes, alternating (`_populations`); Redis round trips
through a counting proxy; the deployed path; the bot against a bare bot on one sandbox
with its flood limits off, in rounds that alternate which goes first (`bench.bot`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench import bot, deployed, load, measure, report
from bench.services import (
    free_port,
    server_stack,
    start_api,
    start_module,
    start_redis,
    start_sandbox,
)
from tests.fixtures.common import ROOT, port_open, wait_until

CODES = 100_000  # issued for the memory figure, then spent by the redeem run
CODES_1M = 1_000_000  # the memory figure again, and redeems among them
SMALL = 10_000  # the population redeems among a million are compared with
SAMPLE_BLOCKS = 5  # of redeem runs among each population: small, million, million, small
TOKENS = 50_000  # redeemed for the memory a live access token keeps
SECONDS = 8  # each load run
WARMUP_SECONDS = 2
CONNECTIONS = 64
BOT_UPDATES = 1_500
BOT_ROUNDS = 6  # each bot started afresh each round, which goes first alternating
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
        "codes": CODES, "bot_updates": BOT_UPDATES, "bot_rounds": BOT_ROUNDS,
        "approvals": APPROVALS,
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
        fresh = measure.issue(settings, 20_000_000, 500)
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

        api.stop()
        with server.client() as client:
            client.flushall()

        _phase(f"redeems among {SMALL:,} and among {CODES_1M:,} live codes")
        results.update(_populations(workdir))

        _phase("Redis round trips through a counting proxy")
        proxy = measure.ProxyThread(server.port)
        stack.callback(proxy.close)
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        counted = start_api("api_worker", proxied, workdir, "api-proxied")
        stack.callback(counted.stop)
        spare = measure.issue(settings, 90_000_000, 51)  # the phases before flushed
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

        _phase(f"bots: {BOT_UPDATES} /start each, {BOT_ROUNDS} rounds")
        sandbox = start_sandbox(workdir)
        stack.callback(sandbox.stop)
        rounds = bot.compare(sandbox, server, workdir, rounds=BOT_ROUNDS, updates=BOT_UPDATES)
        results.update({
            "bare_bot_replies_per_s": round(statistics.median(
                r.rates[bot.BARE] for r in rounds), 1),
            "bot_replies_per_s": round(statistics.median(
                r.rates[bot.PRODUCT] for r in rounds), 1),
            "bot_ratio": round(statistics.median(r.ratio for r in rounds), 3),
            "bot_round_ratios": [round(r.ratio, 3) for r in rounds],
        })
    results["not_measured"] = NOT_MEASURED
    return results


def _populations(workdir: Path) -> dict[str, Any]:
    """Redeem speed among 10,000 and among 1,000,000 live codes, and the memory figure
    for the million.

    Each population has its own fresh Redis server and API process, so runs can alternate
    between them: small, million, million, small, SAMPLE_BLOCKS times, each run one second
    of redeems. The alternation cancels what drifts during the phase (the machine, the
    page cache), and a median of ten runs what one second shows by chance: single runs
    of either population spread by about 10 %. Before each small run its server is
    emptied and given 10,000 fresh codes, which the run spends (at most about 6,000
    in a second); each million run spends codes issued with the million, long before,
    and as many new ones are issued after it, so the million stays a million. Every run
    comes from addresses no earlier run used, so none meets a budget another left."""
    results: dict[str, Any] = {}
    runs: dict[str, list[float]] = {"small": [], "million": []}
    with ExitStack() as stack:
        servers = {name: start_redis(workdir, name) for name in runs}
        for server in servers.values():
            stack.callback(server.stop)
        apis = {name: start_api("api_worker", server.url, workdir, f"api-{name}",
                                TELEGRAM_BOT_USERNAME="bench_bot")
                for name, server in servers.items()}
        for api in apis.values():
            stack.callback(api.stop)
        million_settings = measure.settings_for(servers["million"].url)
        with servers["million"].client() as client:
            per_code_1m, million, rate_1m = measure.memory_per_code_parallel(
                million_settings, client, CODES_1M, 100_000_000, 2)
        results.update({"bytes_per_code_1m": round(per_code_1m, 1),
                        "issue_rps_1m_2_processes": round(rate_1m)})
        spent = 0
        next_uid = 110_000_000  # after the million's users
        next_address = 1

        def redeem_run(name: str) -> load.LoadResult:
            nonlocal spent, next_uid, next_address
            server = servers[name]
            if name == "small":
                with server.client() as client:
                    client.flushall()
                codes = measure.issue(measure.settings_for(server.url), next_uid, SMALL)
                next_uid += SMALL
            else:
                codes = million[spent:spent + SMALL]
            with server.client() as client:
                measure.settled(client)  # the million's redeems add user hashes
            result = load.run(apis[name].url, "/v1/codes/redeem", _bodies(codes), seconds=1,
                              connections=CONNECTIONS, workdir=workdir,
                              first_address=next_address)
            next_address += SMALL
            if name == "million":
                spent += SMALL
                measure.issue(million_settings, next_uid, result.requests)
                next_uid += result.requests
            return result

        errors = 0
        for name in runs:  # a first run each warms its process, and is not counted
            redeem_run(name)
        for _ in range(SAMPLE_BLOCKS):
            for name in ("small", "million", "million", "small"):
                result = redeem_run(name)
                runs[name].append(round(result.rps))
                errors += result.errors
    small, large = statistics.median(runs["small"]), statistics.median(runs["million"])
    results.update({
        "redeem_rps_10k_live": round(small), "redeem_rps_1m_live": round(large),
        "redeem_runs_10k_live": runs["small"], "redeem_runs_1m_live": runs["million"],
        "redeem_errors_live": errors, "redeem_1m_vs_10k": round(large / small, 3),
    })
    return results


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
