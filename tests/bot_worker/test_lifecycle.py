"""The bot process's life: start, publish its name, outlive Redis, stop on SIGTERM, keep secrets."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import keys
from tests.fixtures.bot import ANN, IVAN, BotProcess, BotStarter, code_of
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, which the test may stop and start again."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


def test_username_is_published_at_start(bot: BotProcess, redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        name = wait_until(lambda: client.get(keys.BOT_USERNAME), what="the bot username")
    assert name == bot.username()


def test_bot_outlives_redis_and_recovers_without_restart(
    start_bot: BotStarter, own_redis: RedisServer
) -> None:
    bot = start_bot(redis_url=own_redis.url)
    assert bot.proc is not None
    pid = bot.proc.pid
    assert re.fullmatch(r"\d{8}", code_of(bot.ask("/code", ANN)))

    own_redis.stop()
    down = bot.ask("/code", ANN)
    assert "temporarily unavailable" in down["text"]
    assert not re.search(r"\d{8}", down["text"])
    assert "временно недоступен" in bot.ask("/code", IVAN)["text"]
    assert "temporarily unavailable" in bot.ask("/logout", ANN)["text"]
    assert bot.running()

    own_redis.start()
    assert re.fullmatch(r"\d{8}", code_of(bot.ask("/code", ANN)))
    assert bot.running() and bot.proc.pid == pid
    assert "Traceback" not in bot.output()


def test_bot_starts_while_redis_is_down_and_publishes_once_it_is_up(
    start_bot: BotStarter, own_redis: RedisServer
) -> None:
    own_redis.stop()
    bot = start_bot(redis_url=own_redis.url)
    assert "/code" in bot.ask("/help", ANN)["text"]
    assert "temporarily unavailable" in bot.ask("/code", ANN)["text"]
    own_redis.start()
    with own_redis.client() as client:
        name = wait_until(
            lambda: client.get(keys.BOT_USERNAME), timeout=15, what="the bot username"
        )
    assert name == bot.username()
    assert re.fullmatch(r"\d{8}", code_of(bot.ask("/code", ANN)))
    assert "Redis is unavailable" in bot.output()
    # without the ledger, each update was still answered once (Telegram's offset alone)
    replies = [m for m in bot.messages(ANN["id"]) if m["from_bot"]]
    assert len(replies) == 3, [m["text"][:30] for m in replies]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_ends_the_bot_quickly_and_quietly(
    bot: BotProcess, sig: signal.Signals
) -> None:
    bot.ask("/code", ANN)  # mid-poll, with a store connection open
    assert bot.proc is not None
    bot.proc.send_signal(sig)
    try:
        status = bot.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the bot did not stop within 10 s of {sig.name}:\n{bot.output()}")
    assert status == 0, bot.output()
    assert "Traceback" not in bot.output()
    assert "bot stopped" in bot.output()


def test_no_token_or_code_in_the_log_even_at_debug(start_bot: BotStarter) -> None:
    bot = start_bot(LOG_LEVEL="DEBUG")
    code = code_of(bot.ask("/code", ANN))
    bot.ask("/help", IVAN)
    bot.stop()
    output = bot.output()
    assert " DEBUG " in output, "DEBUG logging should be on"
    assert bot.token not in output
    assert bot.token.split(":", 1)[1] not in output
    assert code not in output


def test_a_failed_send_is_handled_again_and_the_user_gets_the_code(
    bot: BotProcess, sandbox: TelegramSandbox
) -> None:
    """Telegram failing a reply (a 5xx) leaves the update unconfirmed: it is handled
    again and the user gets their code, once, with nothing else said."""
    sandbox.fault("sendMessage", error_code=502, description="Bad Gateway",
                  retry_after=None, token=bot.token)
    sent = bot.send("/code", ANN)
    reply = bot.sandbox.wait_for_bot_message(
        sent["chat_id"], after=sent["message_id"], timeout=20, token=bot.token
    )
    assert re.fullmatch(r"\d{8}", code_of(reply))
    assert "handled again" in bot.output()
    replies = [m for m in bot.messages(sent["chat_id"], after=sent["message_id"])
               if m["from_bot"]]
    assert len(replies) == 1, replies
    assert bot.running()
    assert "Traceback" not in bot.output()


def test_every_line_reaches_stdout_while_serving_and_on_stop(
    start_bot: BotStarter, sandbox: TelegramSandbox
) -> None:
    """The bot flushes stdout once per event-loop turn: a line is out within a turn
    while it serves, and a stop at once after a burst loses none of its lines. Its
    stdout is buffered, as under supervisord (the other tests' processes write
    unbuffered, which would hide a missing flush)."""
    bot = start_bot(PYTHONUNBUFFERED="")
    first = bot.ask("/start", ANN)
    assert re.fullmatch(r"\d{8}", code_of(first))
    wait_until(lambda: f"issued a code to user {ANN['id']}" in bot.output(), timeout=5,
               what="the issue's line on stdout while serving")
    users = [{"id": 900_000 + n, "first_name": "Burst", "language_code": "en"}
             for n in range(100)]
    answer = sandbox.post("/control/messages", [
        {"text": "/start", "token": bot.token, "user": user} for user in users])
    assert answer.status_code == 200, answer.text
    bot_id = int(bot.token.split(":", 1)[0])

    def replies() -> int:
        return next(int(b["send_message_calls"]) for b in sandbox.bots() if b["id"] == bot_id)

    wait_until(lambda: replies() >= 101, timeout=30, what="a reply to every /start")
    bot.stop()  # at once: lines still pending a flush must reach stdout too
    output = bot.output()
    for user in users:
        assert f"issued a code to user {user['id']}\n" in output, user["id"]
    assert "bot stopped" in output
