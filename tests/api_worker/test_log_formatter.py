"""The redacting formatter's shortcuts change no line: its timestamps are logging's own
across second boundaries, and ids are redacted in any case and spelling a shortcut could
miss (upper case, non-ASCII text that matches only through Unicode case folding)."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging

import pytest
from starlette.types import Message, Receive, Scope, Send

from api_worker.front import Front
from api_worker.logs import ACCESS_LOGGER, RedactingFormatter, note_on_access_line

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record(name: str, message: str, args: tuple[object, ...], created: float) -> logging.LogRecord:
    line = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    line.created = created
    line.msecs = (created - int(created)) * 1000
    return line


def test_timestamps_are_loggings_own_across_seconds() -> None:
    ours, plain = RedactingFormatter(FORMAT), logging.Formatter(FORMAT)
    for created in (1_700_000_000.998, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5,
                    1_700_000_000.25, 1_800_000_000.0):
        line = record("api_worker.codes", "code redeemed for user %s", (7,), created)
        assert ours.format(line) == plain.format(line)
    dated = RedactingFormatter(FORMAT, datefmt="%H:%M")
    line = record("x", "m", (), 1_700_000_000.5)
    assert dated.format(line) == logging.Formatter(FORMAT, datefmt="%H:%M").format(line)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/login-requests/Q2hlY2tUaGlz",
        "/V1/LOGIN-REQUESTS/Q2hlY2tUaGlz",
        "/v1/login-reque\u017fts/Q2hlY2tUaGlz",  # long s: matches "s" only by case folding
        "/v1/login-requests/Q2hlY2tUaGlz?wait=5&token=tgl_x",
        "/v1/approvals/Q2hlY2tUaGlz",
        "/V1/Approvals/Q2hlY2tUaGlz?wait=5&token=tgl_x",
        "/v1/approval\u017f/Q2hlY2tUaGlz",  # long s again
    ],
)
def test_ids_and_queries_are_redacted_in_any_spelling(path: str) -> None:
    formatter = RedactingFormatter(FORMAT)
    access = record(
        ACCESS_LOGGER, '%s - "%s %s HTTP/%s" %d', ("10.0.0.1:0", "GET", path, "1.1", 200), 1.0
    )
    text = formatter.format(access)
    assert "Q2hlY2tUaGlz" not in text
    assert "tgl_x" not in text
    assert "{id}" in text
    other = record("api_worker.demo", "the API did not answer %s", (f"GET {path}",), 1.0)
    assert "Q2hlY2tUaGlz" not in formatter.format(other)


def test_a_note_ends_its_own_requests_access_line_only() -> None:
    """`note_on_access_line` in a request's task: that task's access line ends with it,
    once; a line of another logger, and another request's access line, do not."""
    formatter = RedactingFormatter("%(message)s")
    args = ("10.0.0.1:0", "POST", "/v1/codes/redeem?x=1", "1.1", 200)

    def access() -> logging.LogRecord:
        return record(ACCESS_LOGGER, '%s - "%s %s HTTP/%s" %d', args, 1.0)

    def one_request() -> list[str]:
        note_on_access_line("code redeemed for user 7 (100%)")
        other = formatter.format(record("api_worker.x", "something else", (), 1.0))
        line = access()
        return [other, formatter.format(line), formatter.format(line), formatter.format(access())]

    other, line, again, later = contextvars.copy_context().run(one_request)
    assert other == "something else"
    assert line == again == ('10.0.0.1:0 - "POST /v1/codes/redeem?<redacted> HTTP/1.1" 200'
                             " - code redeemed for user 7 (100%)")
    assert later == '10.0.0.1:0 - "POST /v1/codes/redeem?<redacted> HTTP/1.1" 200'
    # another request (another task, another copy of the context) never had the note
    assert formatter.format(access()) == later


@pytest.mark.parametrize("client_left", [False, True], ids=["answered", "client left"])
def test_a_note_no_access_line_carried_is_a_line_of_its_own(client_left: bool) -> None:
    """uvicorn writes no access line for a client that left before its answer started: the
    redeem's record is then logged by `Front` as a line of its own, never lost; an answered
    request's record is on its access line only, once."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # setLevel: loggers' cached answers are cleared too

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        note_on_access_line("code redeemed for user 7")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Message) -> None:  # uvicorn's, which logs at the start
        if message["type"] == "http.response.start" and not client_left:
            logging.getLogger(ACCESS_LOGGER).info(
                '%s - "%s %s HTTP/%s" %d', "10.0.0.1:0", "POST", "/v1/codes/redeem", "1.1", 200)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/codes/redeem",
                    "raw_path": b"/v1/codes/redeem", "query_string": b"", "headers": []}
    try:
        asyncio.run(Front(endpoint, {})(scope, receive, send))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    if client_left:
        assert lines == ["api_worker.front: code redeemed for user 7 "
                         "(the client left before its answer)"]
    else:
        assert lines == ['uvicorn.access: 10.0.0.1:0 - "POST /v1/codes/redeem HTTP/1.1" 200'
                         " - code redeemed for user 7"]
