"""python-telegram-bot's own Bot object parses what the sandbox answers."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from telegram import Bot, CopyTextButton, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, RetryAfter
from telegram.warnings import PTBDeprecationWarning

from tests.fixtures.sandbox import TelegramSandbox, make_token


def test_python_telegram_bot_round_trip(sandbox: TelegramSandbox) -> None:
    token = make_token(90210)

    async def scenario() -> None:
        async with Bot(token, base_url=sandbox.api_base) as bot:
            me = await bot.get_me()
            assert (me.id, me.username, me.is_bot) == (90210, "sandbox90210_bot", True)

            sandbox.send("/start", user={"id": 5, "first_name": "Eve"}, token=token)
            (update,) = await bot.get_updates(timeout=5)
            assert update.message is not None
            assert update.message.text == "/start"
            assert update.message.entities[0].type == "bot_command"
            chat_id = update.message.chat.id

            keyboard = InlineKeyboardMarkup([[
                InlineKeyboardButton("Copy", copy_text=CopyTextButton("12345678")),
                InlineKeyboardButton("Approve", callback_data="approve"),
            ]])
            sent = await bot.send_message(
                chat_id, "Your code: <code>12345678</code>", parse_mode=ParseMode.HTML,
                reply_markup=keyboard,
            )
            assert sent.text == "Your code: 12345678"
            assert sent.entities[0].type == "code"
            assert sent.reply_markup == keyboard

            tapped = sandbox.tap(chat_id, sent.message_id, "approve", token=token)
            updates = await bot.get_updates(offset=update.update_id + 1, timeout=5)
            query = updates[0].callback_query
            assert query is not None
            assert (query.id, query.data) == (tapped["callback_query_id"], "approve")
            assert await query.answer("Approved")

            edited = await bot.edit_message_text("Approved", chat_id, sent.message_id)
            assert not isinstance(edited, bool)
            assert edited.text == "Approved"
            assert edited.edit_date is not None
            with pytest.raises(BadRequest, match="not modified"):
                await bot.edit_message_text("Approved", chat_id, sent.message_id)

            sandbox.fault("sendMessage", retry_after=2, token=token)
            with pytest.raises(RetryAfter) as flood, warnings.catch_warnings():
                # PTB 22 warns about retry_after becoming a timedelta when it builds RetryAfter
                warnings.simplefilter("ignore", PTBDeprecationWarning)
                await bot.send_message(chat_id, "x")
            assert "Retry in 2" in str(flood.value)

            assert await bot.set_my_commands([("start", "Start"), ("code", "Get a code")])
            assert [c.command for c in await bot.get_my_commands()] == ["start", "code"]
            assert await bot.set_webhook("http://127.0.0.1:9/hook")
            with pytest.raises(Conflict):
                await bot.get_updates()
            info = await bot.get_webhook_info()
            assert info.url == "http://127.0.0.1:9/hook"
            assert await bot.delete_webhook()

    asyncio.run(scenario())
