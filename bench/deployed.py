"""`python -m bench.deployed`: the API through the deployed path against one process
started directly, side by side in one run.

Deployed is `make run`'s own launcher (`python -m sandbox.launch`): supervisord with
API_PROCESSES=2 accepting on the one socket it opens (`--fd 0`), every log line through
supervisord. Direct is one `python -m api_worker` on host and port. Both answer
`GET /v1/me` with valid access tokens (one Redis round trip each) on the same Redis, the
same settings and log level, to keep-alive clients:

- latency with a few clients (LATENCY_CONNECTIONS keep-alive connections, each sending
  its next request when the last is answered): `direct_p50_ms`, `deployed_p50_ms`, p99s;
- throughput with CONNECTIONS connections: `direct_rps`, `deployed_rps`;
- `process_share_max`: the largest share of the requests one deployed process answered,
  in either run, counted by each process itself (`tests.fixtures.shares`: its own
  request histogram in PROMETHEUS_MULTIPROC_DIR), not inferred.

`run(workdir, redis_url)` is what `make bench` calls; alone it prints the dict.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import load
from bench.measure import redeem_for_tokens
from bench.services import (
    AS_DEPLOYED,
    AUTH_SECRET,
    Process,
    free_port,
    server_stack,
    start_api,
    start_redis,
)
from shared.settings import load_settings
from shared.store import User
from tests.fixtures.api import issue_code
from tests.fixtures.common import PYTHON, ROOT, base_env, start, stop, wait_until
from tests.fixtures.shares import requests_per_process, shares

API_PROCESSES = 2
CONNECTIONS = 64  # the throughput run and its process shares
LATENCY_CONNECTIONS = 4  # the latency run: a few long-lived keep-alive clients
SECONDS = 8
WARMUP_SECONDS = 2
LOG_LEVEL = "INFO"  # the product default: every request in the access log
USERS = 256  # tokens the clients take turns with
UP_LINE = "running under supervisord"


def _user(n: int) -> User:
    # far from the ids the rest of make bench issues codes to
    return {"id": 7_000_000_000 + n, "username": f"bench{n}", "first_name": "Bench",
            "last_name": None, "language_code": "en"}


def tokens(api_url: str, redis_url: str, users: int = USERS) -> list[str]:
    """Access tokens of `users` users: a code issued in Redis as the bot does, redeemed
    through the API, each from its own X-Forwarded-For address."""
    settings = load_settings(env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url},
                             env_file="/nonexistent")
    codes = [issue_code(settings, _user(n)) for n in range(users)]
    return redeem_for_tokens(api_url, codes, subnet=201)


def start_deployed(workdir: Path, redis_url: str, **env: str) -> tuple[Process, Path]:
    """`make run`'s launcher in a fresh project dir on `redis_url`, once it says it is up;
    (the launcher, the API processes' PROMETHEUS_MULTIPROC_DIR)."""
    project = workdir / "deployed"
    project.mkdir()
    shutil.copy(ROOT / "supervisord.conf", project / "supervisord.conf")
    port = free_port()
    settings = {
        "AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url, "API_PORT": str(port),
        "API_HOST": "127.0.0.1", "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "API_PROCESSES": str(API_PROCESSES), "SANDBOX_PORT": str(free_port()),
        "DEMO_PAGE": "0", **env,
    }
    log = workdir / "deployed.log"
    launcher = Process(start([PYTHON, "-m", "sandbox.launch"],
                             base_env(**AS_DEPLOYED, **settings), log, project),
                       log, port, settings)

    def up() -> bool:
        launcher.alive()
        return UP_LINE in launcher.output()

    wait_until(up, timeout=90, what="the launcher to bring the system up")
    return launcher, project / "var" / "metrics"


def _measure(url: str, items: list[str], connections: int, workdir: Path,
             metrics: Path | None = None) -> tuple[load.LoadResult, dict[int, float]]:
    load.run(url, "/v1/me", items, seconds=WARMUP_SECONDS, connections=connections,
             workdir=workdir, method="GET")
    before = requests_per_process(metrics) if metrics else {}
    result = load.run(url, "/v1/me", items, seconds=SECONDS, connections=connections,
                      workdir=workdir, method="GET")
    after = requests_per_process(metrics) if metrics else {}
    if result.errors:
        raise RuntimeError(f"{result.errors} of {result.requests} answers to {url} failed")
    return result, shares(before, after)


def _shares(found: dict[int, float]) -> list[float]:
    """The processes' shares, largest first, with a process that answered none as 0."""
    values = sorted(found.values(), reverse=True)
    return [round(v, 3) for v in values + [0.0] * (API_PROCESSES - len(values))]


def run(workdir: Path, redis_url: str) -> dict[str, Any]:
    """Direct, then deployed, on the Redis at `redis_url`; the figures and settings."""
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        direct = start_api("api_worker", redis_url, workdir, "direct-api", LOG_LEVEL=LOG_LEVEL)
        stack.callback(direct.stop)
        results["direct_stack"] = server_stack(direct)
        items = tokens(direct.url, redis_url)
        few, _ = _measure(direct.url, items, LATENCY_CONNECTIONS, workdir)
        many, _ = _measure(direct.url, items, CONNECTIONS, workdir)
        results.update(direct_p50_ms=round(few.p50_ms, 3), direct_p99_ms=round(few.p99_ms, 3),
                       direct_rps=round(many.rps))
        direct.stop()

        launcher, metrics = start_deployed(workdir, redis_url, LOG_LEVEL=LOG_LEVEL)
        stack.callback(lambda: stop(launcher.proc))
        results["deployed_stack"] = server_stack(launcher)  # what the API processes logged
        few, few_shares = _measure(launcher.url, items, LATENCY_CONNECTIONS, workdir, metrics)
        many, many_shares = _measure(launcher.url, items, CONNECTIONS, workdir, metrics)
        shares_few, shares_many = _shares(few_shares), _shares(many_shares)
        results.update(
            deployed_p50_ms=round(few.p50_ms, 3), deployed_p99_ms=round(few.p99_ms, 3),
            deployed_rps=round(many.rps),
            process_share_max=max(shares_few[0], shares_many[0]),
            process_shares={f"{LATENCY_CONNECTIONS} connections": shares_few,
                            f"{CONNECTIONS} connections": shares_many},
        )
    results["deployed_p50_gap_ms"] = round(results["deployed_p50_ms"] - results["direct_p50_ms"], 3)
    results["deployed_settings"] = {
        "endpoint": "GET /v1/me (valid tokens)", "generator": load.generator(),
        "api_processes": API_PROCESSES, "socket": "supervisord fcgi-program, --fd 0",
        "latency_connections": LATENCY_CONNECTIONS, "throughput_connections": CONNECTIONS,
        "threads": 1, "seconds": SECONDS, "warmup_seconds": WARMUP_SECONDS,
        "tokens": USERS, "log_level": LOG_LEVEL, "forwarded_allow_ips": "127.0.0.1",
        "direct": "one python -m api_worker on 127.0.0.1:port, same Redis and settings",
    }
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tglogin-deployed-") as tmp:
        workdir = Path(tmp)
        server = start_redis(workdir)
        try:
            started = time.monotonic()
            results = run(workdir, server.url)
            results["seconds_taken"] = round(time.monotonic() - started, 1)
        finally:
            server.stop()
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
