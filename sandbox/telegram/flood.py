"""Telegram's flood control, per bot: sliding-window limits on messages and flood waits.

Rules (what Telegram enforces, with its published numbers as defaults):

- "Messages" are calls of sendMessage and editMessageText. A bot may perform at
  most `send_rate` of them in any sliding 1-second window, and at most
  `chat_burst` to one chat in any sliding `chat_window` seconds (about one a
  second, short bursts allowed). 0 for any of the three means no such limit.
- Every message let through counts, whatever its outcome (a 400 too: the
  limits count requests). A message over a limit is not performed; it is
  answered 429 with `retry_after` = whole seconds until the window frees
  (ceil, at least 1) and does not count toward any window.
- Answering a 429 puts the bot in a flood wait: for `retry_after` seconds every
  call of that method is answered 429 with the seconds that remain (ceil, at
  least 1). A wait from the global limit or from an injected fault covers the
  method in every chat; a wait from a chat's limit covers that chat only.
- Limits are the sandbox's, windows and waits the bot's. Changing the limits
  lifts the waits the old limits caused; a fault's wait runs its course.

Times are `time.monotonic()` seconds, passed in by the caller.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

GLOBAL_WINDOW = 1.0  # seconds of the sliding window `send_rate` applies to
DEFAULT_SEND_RATE = 30  # messages a second per bot, Telegram's broadcast limit
DEFAULT_CHAT_BURST = 3  # messages per chat per `chat_window`
DEFAULT_CHAT_WINDOW = 3.0  # seconds; with the burst of 3, "about one message a second"
_SWEEP_AT = 1_000  # tracked chats (or waits) before expired entries are swept out


@dataclass(frozen=True)
class Limits:
    send_rate: int = DEFAULT_SEND_RATE
    chat_burst: int = DEFAULT_CHAT_BURST
    chat_window: float = DEFAULT_CHAT_WINDOW

    def view(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(until: float, now: float) -> int:
    return max(1, math.ceil(until - now))


def _expire(window: deque[float], before: float) -> None:
    while window and window[0] <= before:
        window.popleft()


def _full(window: deque[float], limit: int, span: float, now: float) -> int | None:
    """Seconds until `window` (already expired up to now) has room for one more, or None."""
    if limit <= 0 or len(window) < limit:
        return None
    return _seconds(window[len(window) - limit] + span, now)


WaitKey = tuple[str, int | None]  # (lower-case method, chat id or None for every chat)


class Flood:
    """One bot's message windows and flood waits."""

    def __init__(self) -> None:
        self._sent: deque[float] = deque()  # times of admitted messages, last second
        self._chats: dict[int, deque[float]] = {}  # the same per chat, last chat_window
        self._waits: dict[WaitKey, tuple[float, bool]] = {}  # until, caused by a limit
        self._sweep_chats = _SWEEP_AT
        self._sweep_waits = _SWEEP_AT

    def waiting(self, method: str, chat_id: int | None, now: float) -> int | None:
        """The seconds left of a flood wait covering this call, or None."""
        left: int | None = None
        keys: list[WaitKey] = [(method, None)]
        if chat_id is not None:
            keys.append((method, chat_id))
        for key in keys:
            entry = self._waits.get(key)
            if entry is None:
                continue
            if entry[0] <= now:
                del self._waits[key]
            else:
                left = max(left or 0, _seconds(entry[0], now))
        return left

    def start_wait(
        self, method: str, chat_id: int | None, seconds: float, now: float, *, by_limit: bool
    ) -> None:
        """A 429 with retry_after `seconds` was answered: wait that long (never shortening one)."""
        if seconds <= 0:
            return
        key = (method, chat_id)
        until = now + seconds
        old = self._waits.get(key)
        if old is None or old[0] < until:
            self._waits[key] = (until, by_limit)
        if len(self._waits) > self._sweep_waits:
            self._waits = {k: v for k, v in self._waits.items() if v[0] > now}
            self._sweep_waits = max(_SWEEP_AT, 2 * len(self._waits))

    def lift_limit_waits(self) -> None:
        """The limits changed: waits they caused end now."""
        self._waits = {k: v for k, v in self._waits.items() if not v[1]}

    def admit(self, method: str, chat_id: int | None, limits: Limits, now: float) -> int | None:
        """Count one message, or refuse it: None when admitted, else retry_after.

        A refusal starts the matching flood wait."""
        _expire(self._sent, now - GLOBAL_WINDOW)
        retry = _full(self._sent, limits.send_rate, GLOBAL_WINDOW, now)
        if retry is not None:
            self.start_wait(method, None, retry, now, by_limit=True)
            return retry
        chat_window: deque[float] | None = None
        per_chat = chat_id is not None and limits.chat_burst > 0 and limits.chat_window > 0
        if per_chat:
            assert chat_id is not None
            chat_window = self._chats.get(chat_id)
            if chat_window is not None:
                _expire(chat_window, now - limits.chat_window)
                retry = _full(chat_window, limits.chat_burst, limits.chat_window, now)
                if retry is not None:
                    self.start_wait(method, chat_id, retry, now, by_limit=True)
                    return retry
            else:
                chat_window = self._chats[chat_id] = deque()
            chat_window.append(now)
            self._sweep(limits, now)
        if limits.send_rate > 0:
            self._sent.append(now)
        return None

    def _sweep(self, limits: Limits, now: float) -> None:
        """Forget chats whose window has emptied, once many are tracked."""
        if len(self._chats) <= self._sweep_chats:
            return
        before = now - limits.chat_window
        self._chats = {c: w for c, w in self._chats.items() if w and w[-1] > before}
        self._sweep_chats = max(_SWEEP_AT, 2 * len(self._chats))
