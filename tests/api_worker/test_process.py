"""Real `python -m api_worker` processes: exactly-once redeems, a shared socket, graceful stop."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.api import ApiStarter, api_settings, issue_code
from tests.fixtures.common import free_port, port_open, wait_until


def redeem_counts(metrics_text: str) -> dict[str, float]:
    """Requests to the redeem route by status, from a /metrics page."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (
                sample.name == "tglogin_http_request_duration_seconds_count"
                and sample.labels["route"] == "/v1/codes/redeem"
            ):
                counts[sample.labels["status"]] = sample.value
    return counts


def test_concurrent_redeems_across_two_processes_succeed_exactly_once(
    redis_url: str, start_api: ApiStarter, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"REDEEM_FAIL_LIMIT": "100000", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    first, second = start_api(**env), start_api(**env)
    code = issue_code(api_settings(redis_url))
    attempts = 240

    async def storm() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=attempts)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{(first, second)[n % 2].url}/v1/codes/redeem", json={"code": code}
                    )
                    for n in range(attempts)
                )
            )

    responses = asyncio.run(storm())
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 1, statuses
    others = [r.json()["error"] for r in responses if r.status_code != 200]
    assert set(others) <= {"invalid_code", "rate_limited"}
    assert all(s < 500 for s in statuses)

    # multiprocess metrics: either process reports the requests of both
    for api in (first, second):
        counts = redeem_counts(httpx.get(f"{api.url}/metrics").text)
        assert counts.get("200") == 1
        assert sum(counts.values()) == attempts
    for api in (first, second):
        assert "Traceback" not in api.output()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def test_processes_sharing_one_socket_see_client_addresses(
    redis_url: str, start_api: ApiStarter
) -> None:
    """supervisord's fcgi-program pattern: `--fd 0` on an inherited listening socket;
    X-Forwarded-For from a trusted proxy (127.0.0.1) is the address the limit counts."""
    with _listening_socket() as sock:
        port = int(sock.getsockname()[1])
        apis = [
            start_api(port=port, args=("--fd", "0"), stdin=sock.fileno(), REDEEM_FAIL_LIMIT="2")
            for _ in range(2)
        ]
    url = f"http://127.0.0.1:{port}/v1/codes/redeem"
    code = issue_code(api_settings(redis_url))
    wrong = {"code": "0" * 8 if code != "0" * 8 else "1" * 8}
    guesser = {"X-Forwarded-For": "203.0.113.50"}
    with httpx.Client(timeout=10) as client:
        assert [client.post(url, json=wrong, headers=guesser).status_code for _ in range(3)] == [
            400,
            400,
            429,
        ]
        honest = {"X-Forwarded-For": "203.0.113.51"}
        assert client.post(url, json={"code": code}, headers=guesser).status_code == 429
        assert client.post(url, json={"code": code}, headers=honest).status_code == 200
    for api in apis:
        assert "Traceback" not in api.output()


def _open_upload(port: int) -> socket.socket:
    """A redeem whose chunked body has only begun to arrive."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=15)
    conn.sendall(
        b"POST /v1/codes/redeem HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    head = b'{"code": "'
    conn.sendall(b"%x\r\n%s\r\n" % (len(head), head))
    return conn


def _finish_upload(conn: socket.socket, code: str) -> bytes:
    rest = code.encode() + b'"}'
    conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
    response = b""
    while chunk := conn.recv(65536):  # the server closes after answering: it is stopping
        response += chunk
    conn.close()
    return response


def test_sigterm_finishes_in_flight_requests(redis_url: str, start_api: ApiStarter) -> None:
    api = start_api()
    code = issue_code(api_settings(redis_url))
    uploads = [_open_upload(api.port) for _ in range(3)]
    # the server has read the first parts once a later request is answered
    assert httpx.get(f"{api.url}/healthz").status_code == 200

    assert api.proc is not None
    api.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "Shutting down" in api.output(), what="uvicorn to begin shutting down")
    wait_until(lambda: not port_open(api.port), what="the listening socket to close")

    typed = [code, code, "1234"]
    answers = [_finish_upload(conn, c) for conn, c in zip(uploads, typed, strict=True)]
    heads = [a.split(b"\r\n", 1)[0] for a in answers]
    assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 Bad Request"]
    assert b'"access_token"' in answers[0]
    assert b'"invalid_code"' in answers[1] and b'"invalid_code"' in answers[2]

    api.proc.wait(timeout=10)  # raises if it has not ended by itself within 10 s
    output = api.output()
    assert "Traceback" not in output
    assert "API worker stopped" in output


def test_starts_without_redis_and_answers_503(start_api: ApiStarter) -> None:
    """Redis being down is not a startup failure: the API starts, and says 503 until it is up."""
    api = start_api(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert httpx.get(f"{api.url}/healthz").status_code == 200
    for response in (
        httpx.get(f"{api.url}/readyz"),
        httpx.post(f"{api.url}/v1/codes/redeem", json={"code": "12345678"}),
    ):
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
    metrics = httpx.get(f"{api.url}/metrics")
    assert "tglogin_redis_up 0.0" in metrics.text.splitlines()
    assert api.running()
    assert "Traceback" not in api.output()


def test_a_burst_of_guesses_from_one_address_gets_no_more_than_the_limit(
    start_api: ApiStarter,
) -> None:
    api = start_api(REDEEM_FAIL_LIMIT="5")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=40)) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{api.url}/v1/codes/redeem", json={"code": f"{n:08d}"})
                    for n in range(40)
                )
            )

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert statuses.count(400) <= 5, statuses
    assert statuses.count(429) >= 35
