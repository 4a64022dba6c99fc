"""The deployed path: `python -m api_worker --fd 0` on a listening socket it inherits, as
supervisord's `fcgi-program` starts every API process; and keep-alive recycling.

Real processes and raw sockets. uvicorn's own `--fd` wraps the socket as a Unix-domain
one, so the loop never set TCP_NODELAY on accepted connections: each answer on a reused
connection waited for the client's delayed acknowledgement (about 40 ms, Nagle's
algorithm). The API builds the socket with its real family instead."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from api_worker.__main__ import RECYCLE_REQUESTS
from tests.fixtures.api import API_SECRET, ApiStarter
from tests.fixtures.common import PYTHON, ROOT, base_env

REUSED = 200  # answers on reused connections: about 8 s with Nagle's 40 ms each
BODY = b'{"code": "1234 5678"}'


def _listening_socket(family: socket.AddressFamily) -> socket.socket:
    """IPv4 on 127.0.0.1, or IPv6 on `::` taking both families (as supervisord opens
    `tcp://[::]:port`)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.listen(128)
    return sock


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _answer(conn: socket.socket) -> bytes:
    """One whole response (its body is small and has a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(
        line.split(b":", 1)[1] for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    ))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection inside a body"
        body += chunk
    assert len(body) == length, "one request, one response"
    return head


def _requests_on_one_connection(address: tuple[str, int], limit: int) -> tuple[int, bytes]:
    """Redeems with a small body sent in one write each, on one connection, until the
    server answers `Connection: close` or `limit` are answered; (answered, last head)."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the client never waits
        head = b""
        for answered in range(1, limit + 1):
            conn.sendall(
                b"POST /v1/codes/redeem HTTP/1.1\r\nHost: api\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(BODY), BODY)
            )
            head = _answer(conn)
            if b"\r\nconnection: close" in head.lower():
                return answered, head
        return limit, head


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_answers_on_reused_connections_through_an_inherited_socket_do_not_wait(
    start_api: ApiStarter, family: socket.AddressFamily
) -> None:
    if family == socket.AF_INET6 and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    with _listening_socket(family) as sock:
        port = sock.getsockname()[1]
        api = start_api(port=port, args=("--fd", "0"), stdin=sock.fileno(),
                        REDEEM_FAIL_LIMIT="100000")
    shown, host = (f"[::]:{port}", "::1") if family == socket.AF_INET6 else (
        f"127.0.0.1:{port}", "127.0.0.1")
    assert f"listening on {shown}, inherited as file descriptor 0" in api.output()
    assert "server: uvloop event loop, httptools parser" in api.output()

    started = time.monotonic()
    reused = 0
    while reused < REUSED:
        answered, _ = _requests_on_one_connection((host, port), REUSED - reused + 1)
        reused += answered - 1  # the first answer on each connection is on a fresh one
    elapsed = time.monotonic() - started
    print(f"{REUSED} answers on reused connections in {elapsed:.2f} s")
    # with the Unix-domain wrapping this took 40 ms per answer, about 8 s
    assert elapsed < 5.0, f"{REUSED} answers on reused connections took {elapsed:.1f} s"
    assert "Traceback" not in api.output()


def test_a_keep_alive_connection_is_recycled_after_its_share_of_requests(
    start_api: ApiStarter,
) -> None:
    """The answer to a connection's RECYCLE_REQUESTS-th request says `Connection: close`
    and the server closes it; every earlier one keeps it open."""
    api = start_api(REDEEM_FAIL_LIMIT="100000")
    answered, head = _requests_on_one_connection(("127.0.0.1", api.port), RECYCLE_REQUESTS + 5)
    assert answered == RECYCLE_REQUESTS, head
    assert head.startswith(b"HTTP/1.1 400 "), head  # an unknown code, answered in full


def test_a_file_descriptor_that_is_no_listening_socket_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "api_worker", "--fd", "0"],
        env=base_env(AUTH_SECRET=API_SECRET, REDIS_URL="redis://127.0.0.1:1/0",
                     PYTHONPATH=str(ROOT)),
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert lines == ["api_worker: --fd 0: file descriptor 0 is not a socket (Socket operation "
                     "on non-socket)"], result.stderr
