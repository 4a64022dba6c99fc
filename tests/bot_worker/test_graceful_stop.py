"""SIGTERM while the bot has updates in hand: every one is answered, then it exits."""

from __future__ import annotations

import signal
import time

from tests.fixtures.bot import ANN, BotProcess, BotStarter, code_of
from tests.fixtures.common import wait_until

STOPPING = "Application is stopping"
ISSUED = "issued a code"


def test_sigterm_finishes_updates_in_flight(start_bot: BotStarter) -> None:
    bot = start_bot()
    wait_until(lambda: _polling(bot), timeout=20, what="the bot to poll")
    assert bot.stop() == 0
    users = [{**ANN, "id": 7000 + n} for n in range(30)]
    sent = [bot.send("/code", user) for user in users]  # queued while no bot polls

    earlier = len(bot.output())  # the log is appended to: only this run's lines count
    bot.start()
    assert bot.proc is not None
    wait_until(lambda: any(m["from_bot"] for m in bot.messages(sent[0]["chat_id"])),
               timeout=20, what="the first reply")
    started = time.monotonic()
    bot.proc.send_signal(signal.SIGTERM)
    bot.proc.wait(10)
    assert time.monotonic() - started < 10

    for message in sent:
        replies = [m for m in bot.messages(message["chat_id"], after=message["message_id"])
                   if m["from_bot"]]
        assert len(replies) == 1, f"chat {message['chat_id']}: {replies}"
        assert len(code_of(replies[0])) == 8
    assert "Traceback" not in bot.output()

    # the stop began with updates still unanswered, and those were answered after it
    lines = bot.output()[earlier:].splitlines()
    stopping = [n for n, line in enumerate(lines) if STOPPING in line]
    assert len(stopping) == 1, "\n".join(lines)
    issued_after = [line for line in lines[stopping[0]:] if ISSUED in line]
    assert issued_after, "every code was issued before the stop began:\n" + "\n".join(lines)
    assert sum(ISSUED in line for line in lines) == len(users)


def _polling(bot: BotProcess) -> bool:
    return any(b["id"] == bot.bot_id and b["get_updates_pending"] for b in bot.sandbox.bots())
