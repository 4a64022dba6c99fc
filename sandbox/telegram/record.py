"""The record of a bot's calls, for tests to read through GET /control/calls.

Every Bot API call is appended once it is answered, and every webhook delivery
attempt once the webhook answered (or failed to), as
`{"method", "t", "status", "chat_id"}` plus `retry_after` for a 429 and
`update_id` for a webhook attempt:

- `method`: the method's canonical name (`sendMessage` whatever case was
  called), the name as called for an unknown one, `webhook` for a delivery;
- `t`: `time.time()` when answered;
- `status`: the HTTP status answered; 0 when there was no answer: a held call
  whose client went away (it was not performed), or a webhook that could not
  be reached or did not answer in time;
- `chat_id`: the chat the call names (an int), else null.

The record keeps the last `MAX_CALLS` entries per bot, in order.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

MAX_CALLS = 20_000  # entries kept per bot; older ones are forgotten

Entry = dict[str, Any]


class CallRecord:
    def __init__(self) -> None:
        self._entries: deque[Entry] = deque(maxlen=MAX_CALLS)

    def add(
        self, method: str, status: int, chat_id: int | None = None, *,
        retry_after: int | None = None, update_id: int | None = None,
    ) -> None:
        entry: Entry = {"method": method, "t": time.time(), "status": status, "chat_id": chat_id}
        if status == 429:
            entry["retry_after"] = retry_after
        if update_id is not None:
            entry["update_id"] = update_id
        self._entries.append(entry)

    def query(self, method: str | None = None, since: float | None = None) -> list[Entry]:
        """Entries in order; only of `method` (any case) and only with t > `since` if given."""
        wanted = method.lower() if method else None
        return [
            dict(entry) for entry in self._entries
            if (wanted is None or entry["method"].lower() == wanted)
            and (since is None or entry["t"] > since)
        ]

    def __len__(self) -> int:
        return len(self._entries)
