"""API_HOST as an IPv6 address: the API alone (`::1`, and `::` for both families), and the
whole system under the launcher and supervisord; the demo's server side reaches the API
whichever family it listens on."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sandbox.supervision import Inet6StreamSocketConfig, Ipv6ServerOptions, tcp_socket
from tests.fixtures.api import API_SECRET, ApiProcess, api_settings, issue_code
from tests.fixtures.bot import ANN
from tests.fixtures.common import ROOT, base_env, free_port, port_open, run_module
from tests.fixtures.system import SystemStarter


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")


def free_port6() -> int:
    """A port free on both ::1 and 127.0.0.1."""
    while True:
        port = free_port()
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", port))
        except OSError:
            continue
        return port


@dataclass
class Api6(ApiProcess):
    host: str = "::1"

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}"


@pytest.fixture
def start_api6(redis_url: str, tmp_path: Path) -> Iterator[list[Api6]]:
    started: list[Api6] = []
    yield started
    for api in started:
        if api.running():
            api.stop()


def _start(started: list[Api6], redis_url: str, tmp_path: Path, host: str, **env: str) -> Api6:
    port = free_port6()
    api = Api6(
        env=base_env(
            AUTH_SECRET=API_SECRET, REDIS_URL=redis_url, API_HOST=host, API_PORT=str(port),
            DEMO_PAGE="1", **env,
        ),
        log=tmp_path / f"api6-{len(started)}.log",
        port=port,
        host="::1",
    )
    started.append(api)
    api.start()
    return api


def _demo_login(base: str, code: str) -> httpx.Response:
    """A visitor enters a code on the demo page; its server side calls the API."""
    with httpx.Client(base_url=base, timeout=20) as browser:
        return browser.post("/demo/login/code", json={"code": code})


def test_the_api_alone_on_ipv6_loopback(
    redis_url: str, tmp_path: Path, start_api6: list[Api6]
) -> None:
    api = _start(start_api6, redis_url, tmp_path, "::1")
    assert httpx.get(f"{api.url}/healthz").status_code == 200
    assert not port_open(api.port)  # 127.0.0.1: nothing listens there
    code = issue_code(api_settings(redis_url))
    redeemed = httpx.post(f"{api.url}/v1/codes/redeem", json={"code": code})
    assert redeemed.status_code == 200, redeemed.text
    logged_in = _demo_login(api.url, issue_code(api_settings(redis_url)))
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["user"]["id"] == 1001
    assert "Uvicorn running on http://[::1]:" in api.output()
    assert "Traceback" not in api.output()


def test_the_api_alone_on_every_address_takes_both_families(
    redis_url: str, tmp_path: Path, start_api6: list[Api6]
) -> None:
    api = _start(start_api6, redis_url, tmp_path, "::", REDEEM_FAIL_LIMIT="2")
    ipv4 = f"http://127.0.0.1:{api.port}"
    for base in (api.url, ipv4):
        assert httpx.get(f"{base}/healthz").status_code == 200, base
        logged_in = _demo_login(base, issue_code(api_settings(redis_url)))
        assert logged_in.status_code == 200, (base, logged_in.text)
    # a proxy on 127.0.0.1 arrives as ::ffff:127.0.0.1 and is still trusted: the limit
    # counts the address it forwards, not the proxy
    wrong = {"code": "00000000"}
    url = f"{ipv4}/v1/codes/redeem"
    guesser = {"X-Forwarded-For": "203.0.113.50"}
    statuses = [httpx.post(url, json=wrong, headers=guesser).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]
    other = httpx.post(url, json=wrong, headers={"X-Forwarded-For": "203.0.113.51"})
    assert other.status_code == 400
    assert "listening on [::]:" in api.output()
    assert "Traceback" not in api.output()


@pytest.mark.parametrize("host", ["::1", "::"])
def test_the_whole_system_with_an_ipv6_api_host(start_system: SystemStarter, host: str) -> None:
    system = start_system(API_HOST=host)
    port = int(system.env["API_PORT"])
    api = f"http://[::1]:{port}"
    code = system.new_code(ANN)
    redeemed = httpx.post(f"{api}/v1/codes/redeem", json={"code": code}, timeout=10)
    assert redeemed.status_code == 200, redeemed.text
    logged_in = _demo_login(api, system.new_code(ANN))
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["user"]["username"] == "ann"
    processes = system.processes()
    assert {p["statename"] for n, p in processes.items() if n.startswith("api:")} == {"RUNNING"}
    output = system.output()
    if host == "::1":
        assert f"API: http://[::1]:{port}/" in output
        assert not port_open(port)
    else:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert "Traceback" not in output


def test_the_launcher_refuses_a_taken_ipv6_port(tmp_path: Path) -> None:
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_module(
            "sandbox.launch", {"API_HOST": "::1", "API_PORT": str(port)}, tmp_path
        )
    assert result.returncode == 2, result
    assert f"port {port} on ::1 is in use; set API_PORT" in result.stdout


def test_supervisord_reads_ipv6_sockets() -> None:
    options = Ipv6ServerOptions()
    config = options.parse_fcgi_socket("tcp://[::1]:8123", None, None, None, 16)
    assert isinstance(config, Inet6StreamSocketConfig)
    assert config.url == "tcp://[::1]:8123"
    assert (config.addr(), config.get_backlog()) == (("::1", 8123), 16)
    config.create_and_bind().close()
    assert tcp_socket("::", 80) == "tcp://[::]:80"
    assert tcp_socket("0.0.0.0", 80) == "tcp://0.0.0.0:80"
    ipv4 = options.parse_fcgi_socket("tcp://127.0.0.1:8123", None, None, None, None)
    assert not isinstance(ipv4, Inet6StreamSocketConfig) and ipv4.url == "tcp://127.0.0.1:8123"
    for bad in ("tcp://[nonsense]:80", "tcp://[::1]:80x"):
        with pytest.raises(ValueError):
            options.parse_fcgi_socket(bad, None, None, None, None)
