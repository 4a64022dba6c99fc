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
        chat: Chat | None = None
        if raw.startswith("@"):
            name = raw[1:].lower()
            chat = next(
                (c for c in self.bot.chats.values()
                 if str(c.info.get("username", "")).lower() == name),
                None,
            )
        else:
            try:
                chat = self.bot.chats.get(int(raw))
            except ValueError:
                chat = None
        if chat is None:
            raise bad_request("chat not found")
        return chat


@dataclass
class Described:
    """A result that Telegram accompanies with a `description` (setWebhook and friends)."""

    result: Any
    description: str


Handler = Callable[[Call], Awaitable[Any]]
H = TypeVar("H", bound=Handler)
METHODS: dict[str, Handler] = {}


def method(name: str) -> Callable[[H], H]:
    def register(handler: H) -> H:
        METHODS[name.lower()] = handler
        return handler

    return register
