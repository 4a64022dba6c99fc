"""stdout is flushed once per event-loop turn, and no line is lost on the way out."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from pathlib import Path

import httpx

from shared.log_output import TickFlushingHandler
from tests.fixtures.api import ApiStarter, api_settings, issue_code
from tests.fixtures.common import wait_until


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _logger(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"test_log_flush.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(TickFlushingHandler(stream))
    return logger


def test_lines_of_one_loop_turn_are_flushed_together_at_the_next() -> None:
    stream = CountingStream()
    logger = _logger(stream)

    async def turn() -> tuple[int, int]:
        for n in range(100):
            logger.info("line %d", n)
        during = stream.flushes
        await asyncio.sleep(0)  # the next turn
        await asyncio.sleep(0)
        return during, stream.flushes

    during, after = asyncio.run(turn())
    assert (during, after) == (0, 1)
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)]


def test_warnings_and_errors_are_flushed_at_once_inside_a_loop() -> None:
    """A process killed with -9, or a loop stuck in its turn, must not take its
    warnings, errors and ALARMs along."""
    stream = CountingStream()
    logger = _logger(stream)

    async def turn() -> list[int]:
        seen = []
        logger.info("info waits for the turn's end")
        seen.append(stream.flushes)
        logger.warning("a warning goes out now")
        seen.append(stream.flushes)
        logger.error("so does an error")
        seen.append(stream.flushes)
        return seen

    assert asyncio.run(turn()) == [0, 1, 2]


def test_outside_a_loop_every_line_is_flushed_at_once() -> None:
    stream = CountingStream()
    logger = _logger(stream)
    logger.info("one")
    logger.info("two")
    assert stream.flushes == 2


def test_a_new_loop_gets_its_own_flush_after_one_stopped_with_a_flush_pending() -> None:
    stream = CountingStream()
    logger = _logger(stream)

    async def log_and_leave() -> None:
        logger.info("left pending")

    asyncio.run(log_and_leave())  # the loop closes before its queued flush runs
    flushed = stream.flushes

    async def log_and_turn() -> None:
        logger.info("next loop")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(log_and_turn())
    assert stream.flushes > flushed


def test_every_line_reaches_stdout_while_serving_and_on_stop(
    redis_url: str, start_api: ApiStarter, tmp_path: Path
) -> None:
    """stdout buffered, as under supervisord (the other tests' processes write
    unbuffered, which would hide a missing flush)."""
    api = start_api(PYTHONUNBUFFERED="")
    code = issue_code(api_settings(redis_url))
    with httpx.Client(timeout=10) as client:
        assert client.post(f"{api.url}/v1/codes/redeem", json={"code": code}).status_code == 200
        # while serving: the redeem's line, with whom it was for, is out within a turn of
        # the loop
        wait_until(
            lambda: '"POST /v1/codes/redeem HTTP/1.1" 200 - code redeemed for user 1001'
            in api.output(),
            timeout=5, what="the redeem's access line on stdout",
        )

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(*(
                client.get(f"{api.url}/healthz?n={n}") for n in range(200)
            ))
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(burst())
    assert statuses == [200] * 200
    api.stop()  # at once: lines still pending a flush must reach stdout too
    output = api.output()
    assert len(re.findall(r'"GET /healthz\?<redacted> HTTP/1.1" 200', output)) == 200
    assert "API worker stopped" in output
