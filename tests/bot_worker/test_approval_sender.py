"""The approval sender's sweep (`bot_worker.approval_sender.Sender`) against a real Redis
and the Telegram sandbox: the edits of expired approvals' messages go out off the
sweep's path, so a slow (or flood-limited) Telegram never holds the sweep up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot
from telegram.request import HTTPXRequest

from bot_worker.approval_sender import Sender
from shared import keys
from shared.approvals import ApprovalQueue, Approvals
from shared.settings import ApiClient, Secret, load_settings
from shared.store import Store
from tests.fixtures.sandbox import TelegramSandbox, make_token
from tests.fixtures.store import run_on_store

ANN: dict[str, Any] = {
    "id": 5001, "first_name": "Ann", "username": "ann", "last_name": None,
    "language_code": "en",
}
SHOP = ApiClient(name="shop.example", key=Secret("shop-key-0123456789abcdefgh"))
EXPIRED = "This request has expired"


async def _until(check: Callable[[], Awaitable[object]], what: str, within: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"no {what} within {within:g} s"
        await asyncio.sleep(0.1)


def test_the_sweep_never_waits_for_the_edits(redis_url: str, sandbox: TelegramSandbox) -> None:
    """Telegram holds the edit of one expired approval's message: the sweep returns at
    once all the same, the next round marks the next approval expired (with its event)
    and its message is edited meanwhile; the held edit goes out once Telegram answers."""
    token = make_token()
    settings = load_settings(
        env={"AUTH_SECRET": "s" * 40, "REDIS_URL": redis_url, "APPROVAL_TTL_SECONDS": "2"},
        env_file="/nonexistent",
    )
    sandbox.send("/start", user=ANN, token=token)  # Ann has a chat with the bot

    async def text_of(message_id: int) -> str:
        found = await asyncio.to_thread(sandbox.messages, ANN["id"], 0, 0, token)
        return next(str(m["text"]) for m in found if m["message_id"] == message_id)

    async def body(store: Store) -> None:
        await store.sessions.enter(ANN)
        approvals = Approvals(store.redis, settings)
        # Telegram's answer to a held call waits as long as the hold: nothing times out
        request = HTTPXRequest(read_timeout=90)
        async with Bot(token, base_url=sandbox.api_base, request=request) as bot:
            sender = Sender(bot, approvals, ApprovalQueue(store.redis, "bot-1"))

            async def expiring(text: str) -> tuple[str, int]:
                """An approval sent to Ann, once it is past its expiry."""
                created = await approvals.create(SHOP, ANN["id"], text, None, False)
                key_hash = approvals.key_hash(created.id)
                message = await bot.send_message(ANN["id"], text)
                await approvals.sent(ANN["id"], key_hash, message.message_id)
                await _until(lambda: _status_is(approvals, created.id, "expired"), "expiry")
                return key_hash, message.message_id

            first, first_message = await expiring("First")
            await asyncio.to_thread(sandbox.fault, "editMessageText", token=token,
                                    hold=60, count=1)
            await asyncio.wait_for(sender.sweep(), 5)  # not held by the edit
            assert await _marked(store, first)

            async def held() -> bool:
                summary = await asyncio.to_thread(sandbox.bot_summary, token)
                return bool(summary["held_calls"].get("editmessagetext"))

            await _until(held, "the first edit to reach Telegram (held)")
            second, second_message = await expiring("Second")
            await asyncio.wait_for(sender.sweep(), 5)
            assert await _marked(store, second)
            events = await store.redis.xrange(keys.events(ANN["id"]))
            assert [fields["t"] for _, fields in events] == ["approval.expired"] * 2

            async def edited(message_id: int) -> bool:
                return (await text_of(message_id)).startswith(EXPIRED)

            await _until(lambda: edited(second_message), "edit of the second message")
            assert not await edited(first_message)  # still held
            await asyncio.to_thread(sandbox.release, "editMessageText", token)
            await _until(lambda: edited(first_message), "edit of the first message")
            await sender.close()  # (asyncio.run cancels the editors on a failure)

    run_on_store(settings, body)


async def _status_is(approvals: Approvals, approval_id: str, status: str) -> bool:
    found = await approvals.status(approval_id, SHOP)
    return found is not None and found.status == status


async def _marked(store: Store, key_hash: str) -> bool:
    """Whether the sweep marked the approval expired (not only read so past its expiry)."""
    return await store.redis.hget(keys.approval(ANN["id"], key_hash), "st") == "expired"
