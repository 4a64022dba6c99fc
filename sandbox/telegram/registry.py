"""The Bot API method table: handlers register here by name, case-insensitively."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from sandbox.telegram.errors import bad_request
from sandbox.telegram.params import Params
from sandbox.telegram.state import Bot, Chat, Sandbox


@dataclass
class Call:
    """One Bot API request, as a handler sees it."""

    sandbox: Sandbox
    bot: Bot
    params: Params
    request: Request

    def chat(self) -> Chat:
        """The chat named by chat_id; it must have talked to this bot."""
        raw = self.params.string("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        chat = self._find_chat(raw)
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def chat_id(self) -> int | None:
        """The id of the chat the call names (by id or @username), or None; never fails."""
        raw = self.params.string("chat_id")
        if not raw:
            return None
        if not raw.startswith("@"):
            try:
                return int(raw)
            except ValueError:
                return None
        chat = self._find_chat(raw)
        return chat.id if chat else None

    def _find_chat(self, raw: str) -> Chat | None:
        if raw.startswith("@"):
            name = raw[1:].lower()
            return next(
                (c for c in self.bot.chats.values()
                 if str(c.info.get("username", "")).lower() == name),
                None,
            )
        try:
            return self.bot.chats.get(int(raw))
        except ValueError:
            return None


@dataclass
class Described:
    """A result that Telegram accompanies with a `description` (setWebhook and friends)."""

    result: Any
    description: str


Handler = Callable[[Call], Awaitable[Any]]
H = TypeVar("H", bound=Handler)
METHODS: dict[str, Handler] = {}  # by lower-case name
NAMES: dict[str, str] = {}  # lower-case name -> the name as Telegram spells it


def method(name: str) -> Callable[[H], H]:
    def register(handler: H) -> H:
        METHODS[name.lower()] = handler
        NAMES[name.lower()] = name
        return handler

    return register
