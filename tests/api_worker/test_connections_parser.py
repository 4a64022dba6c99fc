"""What the API's HTTP parser (httptools, `BoundedProtocol`) takes and refuses, against a
real `python -m api_worker`: the head's size bound (h11's 16 KiB, whole or still
arriving) and methods llhttp does not know, which reach the app as they did on h11."""

from __future__ import annotations

import socket

import pytest

from tests.fixtures.api import ApiStarter

CLOSE = b"Host: api\r\nConnection: close\r\n"


def _exchange(port: int, *parts: bytes) -> bytes:
    """Send `parts` one write each; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            try:
                conn.sendall(part)
            except OSError:  # the server refused the head before the rest arrived
                break
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_head_over_16_kib_is_refused_whole_or_still_arriving(start_api: ApiStarter) -> None:
    api = start_api()
    whole = b"GET /healthz HTTP/1.1\r\n" + CLOSE + b"X-Pad: " + b"a" * 17_000 + b"\r\n\r\n"
    # never ends; its last byte is past the bound, so the server has read all it was sent
    arriving = [b"GET /healthz HTTP/1.1\r\nX-Pad: "] + [b"a" * 4096] * 4
    for answer in (_exchange(api.port, whole), _exchange(api.port, *arriving)):
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b'"invalid_request"' in answer and b"larger than 16 KiB" in answer
    below = b"GET /healthz HTTP/1.1\r\n" + CLOSE + b"X-Pad: " + b"a" * 15_000 + b"\r\n\r\n"
    assert _exchange(api.port, below).startswith(b"HTTP/1.1 200 ")
    assert "Traceback" not in api.output()


@pytest.mark.parametrize("method", [b"BREW", b"get", b"PROPFIND", b"M-SEARCH", b"X" * 30])
def test_any_token_as_a_method_reaches_the_app(start_api: ApiStarter, method: bytes) -> None:
    api = start_api()
    request = method + b" /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n"
    for parts in ([request], [bytes([byte]) for byte in request]):  # whole, a byte a time
        answer = _exchange(api.port, *parts)
        assert answer.startswith(b"HTTP/1.1 405 "), (method, answer)
        assert b"\r\nallow: " in answer.lower(), answer
    assert "Traceback" not in api.output()


def test_a_method_that_is_no_token_is_refused(start_api: ApiStarter) -> None:
    api = start_api()
    for method in (b"G(T", b"GE\x00T"):
        answer = _exchange(api.port, method + b" /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b'"invalid_request"' in answer
