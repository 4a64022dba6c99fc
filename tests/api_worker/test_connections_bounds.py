"""Connections a real API process bounds: heads that never complete, idle thousands, a
request that carries both Content-Length and Transfer-Encoding.

Raw sockets against `python -m api_worker`; a short API_HEADER_TIMEOUT_SECONDS (2 s)
and generous deadlines for the server to act."""

from __future__ import annotations

import configparser
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fixtures.api import ApiStarter
from tests.fixtures.common import ROOT, wait_until

HEAD_TIMEOUT = 2
CLOSED_WITHIN = 15.0  # seconds the test gives the server to close a timed-out connection


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=CLOSED_WITHIN)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _closed_by_server(conn: socket.socket) -> bytes:
    """What the server sends until it closes the connection (AssertionError if it has
    not closed it within CLOSED_WITHIN seconds)."""
    received = b""
    deadline = time.monotonic() + CLOSED_WITHIN
    while time.monotonic() < deadline:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {CLOSED_WITHIN} s")


def _answered(conn: socket.socket) -> None:
    """One keep-alive request on `conn`, read to the end of its answer."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
    first = b""
    while b'{"status":"ok"}' not in first:
        first += conn.recv(65536)


def test_a_connection_that_sends_no_complete_head_is_closed(start_api: ApiStarter) -> None:
    api = start_api(API_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT))
    silent = _connect(api.port)
    half = _connect(api.port)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")
    started = time.monotonic()
    assert _closed_by_server(silent) == b""
    assert _closed_by_server(half) == b""
    # figures for the record: closed after the timeout, not before
    assert time.monotonic() - started >= HEAD_TIMEOUT - 0.5
    silent.close()
    half.close()


def test_trickling_a_head_byte_by_byte_does_not_extend_its_deadline(
    start_api: ApiStarter,
) -> None:
    api = start_api(API_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT))
    conn = _connect(api.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: api\r\n" + b"X-Pad: " + b"a" * 400
    closed = threading.Event()

    def trickle() -> None:
        for byte in head:  # one byte every 50 ms: 20 s of head, 10x the deadline
            if closed.is_set():
                return
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(0.05)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        assert _closed_by_server(conn) == b""
    finally:
        closed.set()
        sender.join(timeout=5)
        conn.close()


def test_a_slow_but_timely_head_and_a_long_held_poll_are_answered(
    start_api: ApiStarter,
) -> None:
    api = start_api(API_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT), TELEGRAM_BOT_USERNAME="t_bot")
    with _connect(api.port) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.5)
        conn.sendall(b"Host: api\r\nConnection: close\r\n\r\n")
        assert _closed_by_server(conn).startswith(b"HTTP/1.1 200 ")
    # the head deadline ends with the head: a poll held longer than it still answers
    created = httpx.post(f"{api.url}/v1/login-requests", json={}).json()
    held = httpx.get(
        f"{api.url}/v1/login-requests/{created['id']}", params={"wait": HEAD_TIMEOUT + 2},
        timeout=30,
    )
    assert held.status_code == 200 and held.json()["status"] == "pending"


def test_a_next_request_begun_and_never_finished_is_closed(start_api: ApiStarter) -> None:
    api = start_api(API_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT))
    with _connect(api.port) as conn:
        _answered(conn)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the keep-alive pause is over
        assert _closed_by_server(conn) == b""


@pytest.mark.parametrize("between", [b"\r\n", b"\r\n\r\n\r\n", b"\n"])
def test_blank_lines_between_requests_do_not_keep_a_connection_open(
    start_api: ApiStarter, between: bytes
) -> None:
    """Line breaks before a request line are no request (llhttp skips them without a
    callback), but they end the keep-alive pause: the head deadline runs from them."""
    api = start_api(API_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT))
    with _connect(api.port) as conn:
        _answered(conn)
        conn.sendall(between)
        assert _closed_by_server(conn) == b""


SMUGGLED = b"GET /v1/me HTTP/1.1\r\nHost: api\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n",
        b"content-length: %d\r\ntransfer-encoding: CHUNKED\r\n",
    ],
)
def test_content_length_with_transfer_encoding_is_refused_and_closed(
    start_api: ApiStarter, framing: bytes
) -> None:
    api = start_api()
    body = b"0\r\n\r\n" + SMUGGLED
    request = (
        b"POST /v1/codes/redeem HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + framing % len(body) + b"\r\n" + body
    )
    with _connect(api.port) as conn:
        conn.sendall(request)
        answer = _closed_by_server(conn)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b'"invalid_request"' in answer and b"Transfer-Encoding" in answer
    assert answer.count(b"HTTP/1.1") == 1, "the request behind it must not be answered"
    assert "Traceback" not in api.output()


@contextmanager
def descriptor_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to `soft` for the block."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _soft_and_hard(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no descriptor limit in /proc")


IDLE = 1500


def test_thousands_of_idle_connections_do_not_stop_a_process_answering(
    start_api: ApiStarter,
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < IDLE + 200:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {IDLE + 200}")
    # started with the stock soft limit of 1,024, the process raises its own
    with descriptor_limit(1024):
        api = start_api(API_HEADER_TIMEOUT_SECONDS="20")
    assert api.proc is not None
    soft, hard_seen = _soft_and_hard(api.proc.pid)
    assert soft == hard_seen, (soft, hard_seen)

    wanted = IDLE + 200 if hard == resource.RLIM_INFINITY else min(hard, IDLE + 500)
    with descriptor_limit(wanted), ExitStack() as stack:
        for n in range(IDLE):
            conn = stack.enter_context(socket.create_connection(("127.0.0.1", api.port)))
            if n % 2:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: api\r\n")  # half a head
        wait_until(
            lambda: _open_descriptors(api.proc.pid) > IDLE if api.proc else False,
            timeout=30, what=f"the API to accept all {IDLE} connections",
        )
        response = httpx.get(f"{api.url}/healthz", timeout=10)
        assert response.status_code == 200
        print(f"{IDLE} idle connections held: {_open_descriptors(api.proc.pid)} descriptors")
        # and the head deadline lets every one of them go
        wait_until(
            lambda: _open_descriptors(api.proc.pid) < 100 if api.proc else False,
            timeout=60, what="the idle connections to be closed",
        )
    assert "Traceback" not in api.output()
    assert "out of system resource" not in api.output()


def test_supervisords_descriptor_floor_fits_this_machine() -> None:
    """supervisord raises its soft limit to `minfds` at start, and exits if the hard limit
    is lower and it is not root; every API process raises its own to the hard limit."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(ROOT / "supervisord.conf")
    minfds = int(conf["supervisord"]["minfds"])
    assert minfds >= 4096
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert os.geteuid() == 0 or hard == resource.RLIM_INFINITY or minfds <= hard
