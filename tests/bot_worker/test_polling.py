"""Polling under a burst: more updates than one getUpdates answers (100), each answered
once, without asking Telegram again for every update that finishes.

Real `python -m bot_worker` processes, the sandbox and Redis. The sandbox's
`/control/messages` takes a list, so a few hundred users send `/start` at once.
"""

from __future__ import annotations

import collections
import os
import signal
from typing import Any

import redis

from tests.bot_worker.test_fleet import TAKEOVER, all_confirmed, holder_pid
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, code_of
from tests.fixtures.codes import code_is_live, code_states, has_live_code
from tests.fixtures.common import wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token

JSON = dict[str, Any]
BURST = 300


def burst(sandbox: TelegramSandbox, token: str, first_id: int, count: int) -> list[JSON]:
    people = [{**ANN, "id": first_id + n, "username": f"b{first_id + n}"}
              for n in range(count)]
    answer = sandbox.post("/control/messages",
                          [{"text": "/start", "token": token, "user": u} for u in people])
    assert answer.status_code == 200, answer.text
    return people


def replies_by_chat(sandbox: TelegramSandbox, token: str) -> collections.Counter[int]:
    return collections.Counter(
        int(call["chat_id"]) for call in sandbox.calls(token, "sendMessage")
        if call["status"] == 200
    )


def assert_each_answered_once(
    sandbox: TelegramSandbox, client: redis.Redis, token: str, people: list[JSON]
) -> None:
    counts = replies_by_chat(sandbox, token)
    assert sorted(counts[u["id"]] for u in people) == [1] * len(people)
    for user in people[:: len(people) // 10]:  # a sample: the reply holds the live code
        (reply,) = [m for m in sandbox.messages(user["id"], token=token) if m["from_bot"]]
        assert code_is_live(client, AUTH_SECRET, code_of(reply))
        assert code_states(client, user["id"]) == ["L"]


def test_a_burst_is_answered_once_each_with_few_getupdates(
    bot: BotProcess, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    """300 users at once: three full getUpdates answers' worth. Updates in hand come back
    in every getUpdates until confirmed; the poller asks again after a quarter of a batch
    has finished (or 0.1 s after an answer that was not full), not whenever an update
    finishes."""
    before = len(sandbox.calls(bot.token, "getUpdates"))
    people = burst(sandbox, bot.token, 7_000_000, BURST)
    with redis_server.client() as client:
        wait_until(lambda: sum(replies_by_chat(sandbox, bot.token).values()) >= BURST
                   and all_confirmed(sandbox, bot.token),
                   timeout=90, what="every /start to be answered and confirmed")
        assert_each_answered_once(sandbox, client, bot.token, people)
    polls = len(sandbox.calls(bot.token, "getUpdates")) - before
    # measured: 22 (67 before: one getUpdates whenever an update finished)
    assert polls < 50, polls
    assert "Traceback" not in bot.output()


def test_a_poller_killed_in_a_burst_loses_nothing_and_answers_once(
    start_bot: BotStarter, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    """kill -9 of the poller in the middle of 300 updates (some answered, some in hand
    with their codes issued and their replies held by the sandbox, the rest not fetched
    yet): the next poller answers the rest, each once. (Replies are held before the kill
    so that none is between Telegram's answer and its handled mark: a kill there is the
    one way to a second reply, as before.)"""
    token = make_token()
    bots = {bot.pid: bot for bot in (start_bot(token=token) for _ in range(2))}
    with redis_server.client() as client:
        wait_until(lambda: holder_pid(client, token) in bots, timeout=TAKEOVER,
                   what="a poller")
        people = burst(sandbox, token, 7_100_000, BURST)
        wait_until(lambda: sum(replies_by_chat(sandbox, token).values()) >= 20,
                   timeout=30, what="the poller to answer some")
        sandbox.fault("sendMessage", token=token, hold=60, count=1000)
        wait_until(lambda: sum(has_live_code(client, u["id"]) for u in people)
                   >= sum(replies_by_chat(sandbox, token).values()) + 30,
                   timeout=30, what="replies held in hand")
        pid = holder_pid(client, token)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = bots.pop(pid)
        assert killed.proc is not None
        killed.proc.wait(10)
        answered = sum(replies_by_chat(sandbox, token).values())
        assert answered < BURST, "killed too late: nothing was left in hand"
        sandbox.fault("sendMessage", token=token, count=0)  # Telegram answers again
        wait_until(lambda: sum(replies_by_chat(sandbox, token).values()) >= BURST
                   and all_confirmed(sandbox, token),
                   timeout=90, what="the survivor to answer the rest")
        assert_each_answered_once(sandbox, client, token, people)
    (survivor,) = bots.values()
    assert "Traceback" not in survivor.output()
