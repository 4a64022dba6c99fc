"""The per-process listener that wakes held polls: it survives every failure of its feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

import pytest

from api_worker.waiters import Waiters
from shared.store import Unavailable


def test_the_listener_survives_failures_and_wakes_waiters(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    release = asyncio.Event()

    async def feed() -> AsyncGenerator[str | None, None]:
        attempts.append(1)
        if len(attempts) == 1:
            raise TypeError("a bug")
        if len(attempts) == 2:
            raise Unavailable("connection refused")
        yield None
        await release.wait()
        yield "abc"
        raise Unavailable("connection lost")

    async def body() -> None:
        waiters = Waiters(feed)
        listener = asyncio.create_task(waiters.run())
        try:
            with waiters.watch("abc") as changed:
                await asyncio.wait_for(changed.wait(), 5)  # woken by the subscription
                changed.clear()
                assert waiters.subscribed
                release.set()
                await asyncio.wait_for(changed.wait(), 5)  # woken by its id
            with waiters.watch("other") as changed:
                await asyncio.wait_for(changed.wait(), 5)  # woken by the loss or the resubscription
            waiters.close()
            with waiters.watch("late") as changed:
                assert changed.is_set()  # shutting down: nobody waits
            assert waiters.waiting() == 0
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    with caplog.at_level(logging.WARNING):
        asyncio.run(body())
    assert len(attempts) >= 3
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    assert any("connection refused" in r.getMessage() for r in caplog.records)
