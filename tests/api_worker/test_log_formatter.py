"""The redacting formatter's shortcuts change no line: its timestamps are logging's own
across second boundaries, and ids are redacted in any case and spelling a shortcut could
miss (upper case, non-ASCII text that matches only through Unicode case folding)."""

from __future__ import annotations

import contextvars
import logging

import pytest

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
