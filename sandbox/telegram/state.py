"""Everything the sandbox remembers: bots, their chats, messages, updates and callbacks.

One `Sandbox` lives in the app; each distinct bot token is its own `Bot` with
its own update queue, webhook and view of chats. All of it is in memory and
touched only from the event loop. `Sandbox.changed()` wakes every long poll,
which then re-checks what it waits for.

Memory is bounded, so a sandbox left up for weeks holds steady (the bounds
below, per bot): a chat keeps its last `MAX_CHAT_MESSAGES` messages (message
ids keep counting; a forgotten message can no longer be replied to, edited or
tapped); a bot keeps its `MAX_CHATS` most recently active chats, its last
`MAX_CALLBACKS` callback queries and its last `MAX_PENDING_UPDATES` unconfirmed
updates (Telegram too drops updates nobody fetched, after 24 hours). The call
record (record.py) and the flood windows (flood.py) bound themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sandbox.telegram.flood import Flood, Limits
from sandbox.telegram.record import CallRecord
from shared.waiting import wait_set

T = TypeVar("T")
JSON = dict[str, Any]

DEFAULT_USER: JSON = {
    "id": 1001, "is_bot": False, "first_name": "Ann", "username": "ann", "language_code": "en",
}
MAX_CHAT_MESSAGES = 200  # messages kept per chat; the oldest is forgotten
MAX_CHATS = 10_000  # chats kept per bot; the least recently active is forgotten
MAX_CALLBACKS = 10_000  # callback queries kept per bot; the oldest is forgotten
MAX_PENDING_UPDATES = 100_000  # unconfirmed updates kept per bot; the oldest is dropped
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
    """The next `count` calls of a method fail with `error_code`, or with `hold` set, are
    performed only after `hold` seconds (or a release), and not at all if the client leaves."""

    error_code: int
    description: str
    retry_after: int | None
    count: int
    hold: float | None = None


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
    record: CallRecord = field(default_factory=CallRecord)
    flood: Flood = field(default_factory=Flood)
    conflicts: int = 0  # getUpdates calls answered 409
    flood_waits: int = 0  # calls answered 429
    blocked: set[int] = field(default_factory=set)  # chat ids of users who blocked the bot
    holding: Counter[str] = field(default_factory=Counter)  # held calls now, by method
    releases: Counter[str] = field(default_factory=Counter)  # a bump ends the method's holds
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
            if len(self.updates) > MAX_PENDING_UPDATES:
                del self.updates[: len(self.updates) - MAX_PENDING_UPDATES]
        return update_id

    def add_chat(self, chat: Chat) -> Chat:
        """Keep a new chat, forgetting the least recently active one beyond `MAX_CHATS`."""
        self.chats[chat.id] = chat
        while len(self.chats) > MAX_CHATS:
            del self.chats[next(iter(self.chats))]
        return chat

    def touch(self, chat: Chat) -> None:
        """`chat` was active: it becomes the last to be forgotten."""
        if self.chats.get(chat.id) is chat:
            del self.chats[chat.id]
            self.chats[chat.id] = chat

    def add_message(self, chat: Chat, fields: JSON, *, from_bot: bool) -> StoredMessage:
        now = time.time()
        message = {"message_id": chat.next_message_id, **fields, "date": int(now)}
        message["chat"] = chat.info
        chat.next_message_id += 1
        stored = StoredMessage(message=message, from_bot=from_bot, sent_at=now)
        chat.messages[stored.message_id] = stored
        while len(chat.messages) > MAX_CHAT_MESSAGES:
            del chat.messages[next(iter(chat.messages))]
        chat.version += 1
        self.touch(chat)
        return stored

    def new_callback(self, chat_id: int, message_id: int, data: str) -> CallbackQuery:
        query = CallbackQuery(str(next(_callback_ids)), chat_id, message_id, data)
        self.callbacks[query.id] = query
        while len(self.callbacks) > MAX_CALLBACKS:
            del self.callbacks[next(iter(self.callbacks))]
        chat = self.chats.get(chat_id)
        if chat is not None:
            self.touch(chat)
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
            "conflicts": self.conflicts,
            "flood_waits": self.flood_waits,
            "chats": sorted(self.chats),
            "callback_queries": len(self.callbacks),
            "blocked": sorted(self.blocked),
            "held_calls": dict(self.holding),
        }

    def answered(
        self, method: str, status: int, chat_id: int | None, retry_after: int | None = None
    ) -> None:
        """Record a call as answered and count the 409s of getUpdates and every 429."""
        self.record.add(method, status, chat_id, retry_after=retry_after)
        if status == 409 and method == "getUpdates":
            self.conflicts += 1
        if status == 429:
            self.flood_waits += 1


class Sandbox:
    def __init__(self, bot_username: str | None = None, limits: Limits | None = None) -> None:
        self.bot_username = bot_username
        self.default_limits = limits or Limits()
        self.limits = self.default_limits
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
            await wait_set(event, remaining)

    def close(self) -> None:
        """End every long poll and webhook delivery now (the server is stopping)."""
        for bot in self.bots.values():
            bot.closed = True
            if bot.webhook and bot.webhook.task:
                bot.webhook.task.cancel()
        self.changed()

    def set_limits(self, limits: Limits) -> None:
        """New flood limits for every bot; waits the old limits caused end now."""
        self.limits = limits
        for bot in self.bots.values():
            bot.flood.lift_limit_waits()

    def reset(self) -> None:
        """Forget every bot and restore the limits given at start."""
        self.close()
        self.bots.clear()
        self.last_bot = None
        self.limits = self.default_limits
