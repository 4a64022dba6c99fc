"""Updates driven in-process through the real Dispatcher and Application, against the
sandbox and Redis.

For what a separate process cannot show: one update handled twice (a webhook
retry or a polling takeover redelivers it) answers once and issues one code;
an update handled again after a crash between its code and its reply re-sends
that same code; and an update with a known id but other content (a Bot API
that started its ids again) is a new update.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update

from bot_worker.app import UPDATES_REQUEST, Runtime, build_application
from bot_worker.polling import UpdatesRequest, _Batch
from shared import keys
from shared.ledger import UpdateKey
from shared.settings import Settings, load_settings
from tests.fixtures.bot import ANN, AUTH_SECRET, code_of
from tests.fixtures.codes import code_is_live, code_states
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token


def _settings(sandbox: TelegramSandbox, redis_url: str, token: str) -> Settings:
    return load_settings(
        env={
            "AUTH_SECRET": AUTH_SECRET,
            "TELEGRAM_BOT_TOKEN": token,
            "TELEGRAM_API_BASE_URL": sandbox.api_base,
            "REDIS_URL": redis_url,
        },
        env_file="/nonexistent",
        require_bot_token=True,
    )


def _with_runtime(
    settings: Settings, body: Callable[[Runtime], Awaitable[None]],
    requests: list[UpdatesRequest] | None = None,
) -> None:
    """Run `body` with a runtime (`requests` gets its getUpdates request)."""
    async def main() -> None:
        application = build_application(settings)
        if requests is not None:
            requests.append(application.bot_data[UPDATES_REQUEST])
        async with application:
            runtime = Runtime(application, settings, asyncio.Event())
            try:
                await runtime.ledger.heartbeat()
                await body(runtime)
            finally:
                await runtime.close()

    asyncio.run(main())


def _bot_replies(sandbox: TelegramSandbox, sent: dict[str, Any], token: str) -> list[Any]:
    return [
        m for m in sandbox.messages(sent["chat_id"], after=sent["message_id"], token=token)
        if m["from_bot"]
    ]


def test_a_redelivered_update_is_answered_once(
    sandbox: TelegramSandbox, redis_server: RedisServer, redis_url: str
) -> None:
    token = make_token()
    sent = sandbox.send("/code", user=ANN, token=token)

    async def deliver_twice(runtime: Runtime) -> None:
        (update,) = await runtime.bot.get_updates(timeout=5)
        assert isinstance(update, Update)
        assert await runtime.dispatcher.handle(update)
        assert await runtime.dispatcher.handle(update)  # only confirmed, not handled again

    _with_runtime(_settings(sandbox, redis_url, token), deliver_twice)
    replies = _bot_replies(sandbox, sent, token)
    assert len(replies) == 1, replies
    assert re.fullmatch(r"\d{8}", code_of(replies[0]))
    with redis_server.client() as client:
        assert code_states(client, ANN["id"]) == ["L"]  # one code, issued once


def test_an_update_cut_short_before_its_reply_resends_the_same_code(
    sandbox: TelegramSandbox, redis_server: RedisServer, redis_url: str
) -> None:
    """The reply fails with a Telegram error that may pass: the update is given back,
    and handling it again sends the code issued the first time, not a second one."""
    token = make_token()
    sent = sandbox.send("/code", user=ANN, token=token)
    sandbox.fault("sendMessage", error_code=502, description="Bad Gateway",
                  retry_after=None, token=token)

    async def fail_then_succeed(runtime: Runtime) -> None:
        (update,) = await runtime.bot.get_updates(timeout=5)
        assert isinstance(update, Update)
        assert not await runtime.dispatcher.handle(update)  # not confirmed: handle again
        assert await runtime.dispatcher.handle(update)

    _with_runtime(_settings(sandbox, redis_url, token), fail_then_succeed)
    (reply,) = _bot_replies(sandbox, sent, token)
    with redis_server.client() as client:
        assert code_states(client, ANN["id"]) == ["L"]
        assert code_is_live(client, AUTH_SECRET, code_of(reply))
    assert re.fullmatch(r"\d{8}", code_of(reply))


def test_the_same_update_id_with_other_content_is_a_new_update(
    sandbox: TelegramSandbox, redis_server: RedisServer, redis_url: str
) -> None:
    """A Bot API that starts its ids again (a restarted sandbox) is never swallowed."""
    token = make_token()
    first = sandbox.send("/code", user=ANN, token=token)

    async def twice_the_same_id(runtime: Runtime) -> None:
        (update,) = await runtime.bot.get_updates(timeout=5)
        assert isinstance(update, Update) and update.message is not None
        assert await runtime.dispatcher.handle(update)
        data = update.to_dict()
        data["message"]["date"] += 3600  # the same id, a message an hour later
        again = Update.de_json(data, runtime.bot)
        assert again.update_id == update.update_id
        assert await runtime.dispatcher.handle(again)

    _with_runtime(_settings(sandbox, redis_url, token), twice_the_same_id)
    replies = _bot_replies(sandbox, first, token)
    assert len(replies) == 2, replies
    assert code_of(replies[0]) != code_of(replies[1])


def test_updates_are_known_by_their_content_as_the_bot_api_sent_it(
    sandbox: TelegramSandbox, redis_server: RedisServer, redis_url: str
) -> None:
    """Polling fingerprints each update from the JSON getUpdates brought, not from the
    Update serialised back (which differs: python-telegram-bot adds defaults such as
    `channel_chat_created`): the poller's batch hands that JSON to the dispatcher, the
    ledger marks the update under it, the same update fetched twice is answered once,
    and its id with other content is a new update."""
    token = make_token()
    first = sandbox.send("/code", user=ANN, token=token)
    requests: list[UpdatesRequest] = []
    marks: list[tuple[str, str, dict[str, str]]] = []

    async def fetched_twice(runtime: Runtime) -> None:
        (request,) = requests
        (update,) = await runtime.bot.get_updates(timeout=5)
        content = request.contents[update.update_id]
        assert content["message"]["text"] == "/code"
        batch = _Batch(runtime.dispatcher, asyncio.Event())
        assert batch.take([update], request.contents)
        assert await batch.tasks[update.update_id]  # handled through the poller's batch
        bot_id = runtime.bot.id
        raw = UpdateKey.of(bot_id, update.update_id, content).field
        rendered = UpdateKey.of(bot_id, update.update_id, update.to_dict()).field
        with redis_server.client() as client:
            marks.append((raw, rendered, client.hgetall(keys.updates(bot_id, update.update_id))))
        (again,) = await runtime.bot.get_updates(timeout=5)  # not confirmed: it comes again
        assert again is not update and again.update_id == update.update_id
        assert await runtime.dispatcher.handle(again, request.contents[again.update_id])
        other = dict(content, message=dict(content["message"],
                                           date=content["message"]["date"] + 3600))
        assert await runtime.dispatcher.handle(Update.de_json(other, runtime.bot), other)

    _with_runtime(_settings(sandbox, redis_url, token), fetched_twice, requests)
    ((raw, rendered, ledger),) = marks
    assert raw != rendered  # the two really differ, so the mark shows which was used
    assert ledger == {raw: "d"}
    replies = _bot_replies(sandbox, first, token)
    assert len(replies) == 2, replies  # the update once, the other content once
