"""Handlers driven in-process by the real Application, against the sandbox and Redis.

For what a separate process cannot show: one update processed twice (a webhook
retry or a polling takeover redelivers it) must not issue two codes.
"""

from __future__ import annotations

import asyncio
import re

from telegram import Update

from bot_worker.app import build_application
from shared import keys
from shared.settings import load_settings
from tests.fixtures.bot import ANN, AUTH_SECRET, code_of
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token


def test_a_redelivered_update_issues_no_second_code(
    sandbox: TelegramSandbox, redis_server: RedisServer, redis_url: str
) -> None:
    token = make_token()
    settings = load_settings(
        env={
            "AUTH_SECRET": AUTH_SECRET,
            "TELEGRAM_BOT_TOKEN": token,
            "TELEGRAM_API_BASE_URL": sandbox.api_base,
            "REDIS_URL": redis_url,
        },
        env_file="/nonexistent",
        require_bot_token=True,
    )
    sent = sandbox.send("/code", user=ANN, token=token)

    async def deliver_twice() -> None:
        application = build_application(settings)
        assert application.post_init is not None and application.post_shutdown is not None
        async with application:
            await application.post_init(application)
            try:
                (update,) = await application.bot.get_updates(timeout=5)
                assert isinstance(update, Update)
                await application.process_update(update)
                await application.process_update(update)
            finally:
                await application.post_shutdown(application)

    asyncio.run(deliver_twice())

    replies = [
        m for m in sandbox.messages(sent["chat_id"], after=sent["message_id"], token=token)
        if m["from_bot"]
    ]
    assert len(replies) == 1, replies
    assert re.fullmatch(r"\d{8}", code_of(replies[0]))
    with redis_server.client() as client:
        assert client.zcard(keys.user_issues(ANN["id"])) == 1
        assert len(list(client.scan_iter(match=keys.CODE + "*"))) == 1
