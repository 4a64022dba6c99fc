"""Long polls that end early when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    while True:  # the body has been read, so the next message is the disconnect
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, waiting: Awaitable[T]) -> T | None:
    """The result of `waiting`, or None as soon as the HTTP client disconnects."""
    main = asyncio.ensure_future(waiting)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({main, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (main, watch):
            if not task.done():
                task.cancel()
    if main.done() and not main.cancelled():
        return main.result()
    return None
