"""How a tglogin process's lines reach stdout cheaply: both workers log a line per
request or update, so the cost of a line is kept down where that changes no line.

- `lighten_records()`: records skip what no format of ours shows.
- `TickFlushingHandler`: stdout is flushed once per event-loop turn, not once a line;
  warnings and errors at once, and nothing pending is lost on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


def lighten_records() -> None:
    """Records no longer look up the caller's file and line, thread, process or
    multiprocessing names: no format of ours shows them (logging's documented
    optimisation; a line costs about a quarter less). Tracebacks are unaffected."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class TickFlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, in a thread running an event loop, flushes its stream once
    per turn of the loop (every line written during a turn goes out together at the
    start of the next) instead of after every line; elsewhere it flushes each line.

    No line is lost on the way out: a loop that stops with a flush pending leaves it to
    `logging.shutdown()` (at exit, also after SystemExit and an unhandled exception),
    which flushes every handler, and a line logged outside the loop is flushed at once.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._flush_on: asyncio.AbstractEventLoop | None = None  # loop with a flush queued

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        loop = asyncio._get_running_loop()
        if loop is None or record.levelno >= logging.WARNING:
            # warnings, errors and ALARMs go out at once: a process killed with -9 or a
            # loop stuck in that turn must not take them along
            self.flush()
        elif self._flush_on is not loop:  # none queued on this loop yet
            self._flush_on = loop
            loop.call_soon(self._flush_queued)

    def _flush_queued(self) -> None:
        self._flush_on = None
        self.flush()
