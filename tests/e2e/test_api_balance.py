"""Two API processes on supervisord's one socket share a few long-lived keep-alive
clients, even clients that connected while only one of them was up (as after a restart).

Each process counts the requests it answered itself (its request histogram in
PROMETHEUS_MULTIPROC_DIR, `tests.fixtures.shares`). Without keep-alive recycling every
request of these clients stays on the process that accepted them: a share of 1.0."""

from __future__ import annotations

import httpx

from tests.fixtures.common import wait_until
from tests.fixtures.shares import requests_per_process, shares
from tests.fixtures.system import SystemStarter

CLIENTS = 4
ROUNDS = 600  # each client's requests once both processes are up: 6 recycles each


def test_a_few_keep_alive_clients_spread_over_both_processes(
    start_system: SystemStarter,
) -> None:
    system = start_system(API_PROCESSES="2")
    metrics = system.project / "var" / "metrics"
    rpc = system.supervisor()
    rpc.stopProcess("api:api-1")  # returns once it has stopped
    clients = [httpx.Client(base_url=system.api_url, timeout=10) for _ in range(CLIENTS)]
    try:
        for client in clients:  # every client connects to api-0, the one process up
            assert client.get("/healthz").status_code == 200
        rpc.startProcess("api:api-1")
        pids = {name: system.processes()[name]["pid"] for name in ("api:api-0", "api:api-1")}

        def api_1_answers() -> bool:
            # fresh connections until one is accepted by api-1
            assert httpx.get(f"{system.api_url}/healthz", timeout=5).status_code == 200
            return requests_per_process(metrics).get(pids["api:api-1"], 0) > 0

        wait_until(api_1_answers, timeout=30, what="api-1 to accept connections")
        before = requests_per_process(metrics)
        for _ in range(ROUNDS):
            for client in clients:
                assert client.get("/healthz").status_code == 200
        served = shares(before, requests_per_process(metrics))
    finally:
        for client in clients:
            client.close()
    print("shares of the keep-alive clients' requests:", served)
    assert set(served) == set(pids.values()), served
    # a meaningful share each: recycled connections go to whichever process accepts
    assert min(served.values()) >= 0.2, served
