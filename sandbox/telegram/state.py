"""Everything the sandbox remembers: bots, their chats, messages, updates and callbacks.

One `Sandbox` lives in the app; each distinct bot token is its own `Bot` with
its own update queue, webhook and view of chats. All of it is in memory and
touched only from the event loop. `Sandbox.changed()` wakes every long poll,
which then re-checks what it waits for.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
JSON = dict[str, Any]

DEFAULT_USER: JSON = {
    "id": 1001, "is_bot": False, "first_name": "Ann", "username": "ann", "language_code": "en",
}
# callback query ids keep counting across resets, so a stale id never matches a new query
_callback_ids = itertools.count(4_000_000_000_000_000_001)


@dataclass
class StoredMessage:
    message: JSON  # the Bot API Message object, current state
    from_bot: bool
    sent_at: float
    edit_count: int = 0
    edited_at: float | None = None

    @property
    def message_id(self) -> int:
        return int(self.message["message_id"])

    def view(self) -> JSON:
        """What the control interface shows: the Message plus sandbox bookkeeping."""
        return {
            **self.message, "from_bot": self.from_bot, "edited": self.edit_count > 0,
            "edit_count": self.edit_count, "sent_at": self.sent_at, "edited_at": self.edited_at,
        }


@dataclass
class Chat:
    info: JSON  # the Bot API Chat object
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    version: int = 0  # bumped on every new or edited message

    @property
    def id(self) -> int:
        return int(self.info["id"])


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    last_error_date: int | None = None
    last_error_message: str | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class Fault:
    error_code: int
    description: str
    retry_after: int | None
    count: int


@dataclass
class CallbackQuery:
    id: str
    chat_id: int
    message_id: int
    data: str
    answer: JSON | None = None


@dataclass
class Bot:
    token: str
    id: int
    username: str
    first_name: str = "Sandbox Bot"
    updates: list[JSON] = field(default_factory=list)
    next_update_id: int = 1
    allowed_updates: list[str] | None = None
    webhook: Webhook | None = None
    commands: dict[str, list[JSON]] = field(default_factory=dict)
    chats: dict[int, Chat] = field(default_factory=dict)
    callbacks: dict[str, CallbackQuery] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)  # by lower-case method name
    poll_generation: int = 0  # a new getUpdates ends every older pending one
    polls_pending: int = 0
    closed: bool = False  # set by a reset: pending polls of this bot end at once

    def user(self) -> JSON:
        """The getMe result."""
        return {
            "id": self.id, "is_bot": True, "first_name": self.first_name,
            "username": self.username, "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False,
            "can_connect_to_business": False, "has_main_web_app": False,
        }

    def sender(self) -> JSON:
        return {
            "id": self.id, "is_bot": True, "first_name": self.first_name,
            "username": self.username,
        }

    def queue(self, kind: str, payload: JSON) -> int:
        """Add an update (unless filtered out by allowed_updates); returns its update_id."""
        update_id = self.next_update_id
        self.next_update_id += 1
        allowed = self.webhook.allowed_updates if self.webhook else self.allowed_updates
        if not allowed or kind in allowed:
            self.updates.append({"update_id": update_id, kind: payload})
        return update_id

    def add_message(self, chat: Chat, fields: JSON, *, from_bot: bool) -> StoredMessage:
        now = time.time()
        message = {"message_id": chat.next_message_id, **fields, "date": int(now)}
        message["chat"] = chat.info
        chat.next_message_id += 1
        stored = StoredMessage(message=message, from_bot=from_bot, sent_at=now)
        chat.messages[stored.message_id] = stored
        chat.version += 1
        return stored

    def new_callback(self, chat_id: int, message_id: int, data: str) -> CallbackQuery:
        query = CallbackQuery(str(next(_callback_ids)), chat_id, message_id, data)
        self.callbacks[query.id] = query
        return query

    def chat_instance(self, chat_id: int) -> str:
        return str((self.id * 1_000_003 + chat_id) % 9_000_000_000_000_000_000)

    def take_fault(self, method: str) -> Fault | None:
        fault = self.faults.get(method)
        if fault is None:
            return None
        fault.count -= 1
        if fault.count <= 0:
            del self.faults[method]
        return fault

    def summary(self, *, default: bool) -> JSON:
        """What GET /control/bots shows; never the token."""
        return {
            "id": self.id, "username": self.username, "default": default,
            "webhook_url": self.webhook.url if self.webhook else None,
            "pending_update_count": len(self.updates),
            "get_updates_pending": self.polls_pending > 0,
            "get_updates_calls": self.calls["getupdates"],
            "send_message_calls": self.calls["sendmessage"],
            "calls": dict(self.calls),
            "chats": sorted(self.chats),
        }


class Sandbox:
    def __init__(self, bot_username: str | None = None) -> None:
        self.bot_username = bot_username
        self.bots: dict[str, Bot] = {}
        self.last_bot: Bot | None = None
        self._event = asyncio.Event()

    def bot(self, token: str) -> Bot:
        """The bot for a well-formed token, created on first use."""
        bot = self.bots.get(token)
        if bot is None:
            bot_id = int(token.split(":", 1)[0])
            bot = Bot(token=token, id=bot_id, username=self.bot_username or f"sandbox{bot_id}_bot")
            self.bots[token] = bot
        return bot

    def changed(self) -> None:
        """Wake every long poll so it re-checks its condition."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, condition: Callable[[], T], seconds: float) -> T:
        """`condition()` once it is truthy, or its last value after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            event = self._event
            value = condition()
            remaining = deadline - loop.time()
            if value or remaining <= 0:
                return value
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass

    def close(self) -> None:
        """End every long poll and webhook delivery now (the server is stopping)."""
        for bot in self.bots.values():
            bot.closed = True
            if bot.webhook and bot.webhook.task:
                bot.webhook.task.cancel()
        self.changed()

    def reset(self) -> None:
        self.close()
        self.bots.clear()
        self.last_bot = None
