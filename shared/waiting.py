"""Waiting for an `asyncio.Event` with a time limit, so that a cancellation always ends
the wait.

`asyncio.wait_for` on Python 3.11 swallows a cancellation that arrives after what it
waits for has finished but before the waiting task resumes: it returns the result, and
the task goes on as if never cancelled (CPython gh-86296, fixed in 3.12). A loop that
waits that way and is cancelled to stop (a deliverer closing, a bot stopping) can miss
its stop and run on. `asyncio.timeout` keeps the cancellation. Nothing in tglogin calls
`asyncio.wait_for` (tests/shared/test_waiting.py checks).
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; whether it was set (also when it was
    set in the very turn the time ran out)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
