"""A wait with a time limit ends when its task is cancelled, whenever the cancellation
comes: `asyncio.wait_for` on Python 3.11 returns instead when the cancellation arrives
after the event is set but before the waiting task resumes (CPython gh-86296), and a
deliverer's loop waiting that way did not stop when its API process shut down."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from shared.waiting import wait_set

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _wait_for(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def _cancelled_as_the_event_is_set(wait: Wait, turns: int) -> str:
    """Set the event, let `turns` turns of the loop pass, cancel the waiting task: how it
    ended ("done" when it had finished before the cancellation)."""
    event = asyncio.Event()
    task = asyncio.ensure_future(wait(event, 30))
    for _ in range(2):
        await asyncio.sleep(0)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    if task.done():
        return "done"
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "went on"


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_cancelled_wait_always_ends_cancelled(run: Callable[..., object]) -> None:
    async def outcomes(wait: Wait) -> list[str]:
        return [await _cancelled_as_the_event_is_set(wait, turns) for turns in range(6)]

    ours = run(outcomes(wait_set))
    assert "went on" not in ours and ours[0] == "cancelled", ours
    theirs = run(outcomes(_wait_for))
    if sys.version_info < (3, 12):  # the check is real: wait_for goes on at those moments
        assert "went on" in theirs, theirs


def test_wait_set_answers_whether_the_event_came() -> None:
    async def body() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        came = await wait_set(event, 30)
        already = await wait_set(event, 0)
        return timed_out, came, already

    assert asyncio.run(body()) == (False, True, True)


def test_nothing_waits_with_asyncio_wait_for() -> None:
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in ("shared", "api_worker", "bot_worker", "sandbox", "bench"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                called = isinstance(node, ast.Call) and ast.unparse(node.func) in (
                    "asyncio.wait_for", "asyncio.tasks.wait_for")
                imported = isinstance(node, ast.ImportFrom) and node.module in (
                    "asyncio", "asyncio.tasks") and any(
                    alias.name == "wait_for" for alias in node.names)
                if called or imported:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
