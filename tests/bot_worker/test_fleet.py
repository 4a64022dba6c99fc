"""Several bot processes on one token: the polling lease, takeover, at-least-once
handling with one reply, graceful stop, and update identity across Bot API restarts.

Real `python -m bot_worker` processes, the sandbox and Redis. The sandbox's
`hold` fault keeps a bot's sendMessage calls waiting, which is how a test
makes a process hold a fetched batch it has not finished handling.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import pytest
import redis

from shared import keys
from tests.bot_worker.test_login_links import create, poll
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, code_of
from tests.fixtures.codes import code_is_live, code_states, has_live_code
from tests.fixtures.common import wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token

TAKEOVER = 15.0  # seconds the contract gives another process to start polling
JSON = dict[str, Any]


def holder_pid(client: redis.Redis, token: str) -> int | None:
    """The pid of the process holding the polling lease (its name is host:pid:random)."""
    holder = client.get(keys.poller(int(token.split(":", 1)[0])))
    return int(str(holder).split(":")[1]) if holder else None


def users(first_id: int, count: int) -> list[JSON]:
    return [{**ANN, "id": first_id + n, "username": f"u{first_id + n}"} for n in range(count)]


def bot_replies(sandbox: TelegramSandbox, token: str, sent: JSON) -> list[JSON]:
    return [m for m in sandbox.messages(sent["chat_id"], after=sent["message_id"], token=token)
            if m["from_bot"]]


def all_confirmed(sandbox: TelegramSandbox, token: str) -> bool:
    """Telegram has nothing left to deliver: every update was confirmed."""
    return sandbox.bot_summary(token)["pending_update_count"] == 0


def assert_current_code(client: redis.Redis, user_id: int, reply: JSON) -> None:
    """The code in the reply is the user's one live code, issued once."""
    assert code_is_live(client, AUTH_SECRET, code_of(reply))
    assert code_states(client, user_id) == ["L"]


def test_one_process_polls_and_another_takes_over_when_it_is_killed(
    start_bot: BotStarter, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    token = make_token()
    bots = [start_bot(token=token) for _ in range(3)]
    by_pid = {bot.pid: bot for bot in bots}
    with redis_server.client() as client:
        for round_ in range(2):
            holder = wait_until(lambda: holder_pid(client, token) in by_pid,
                                timeout=TAKEOVER, what="a live poller")
            pid = holder_pid(client, token)
            assert pid is not None
            # steady traffic while it polls: answered, and never a 409
            for user in users(9000 + 10 * round_, 5):
                assert code_of(bots[0].ask("/code", user))
            assert sandbox.bot_summary(token)["conflicts"] == 0
            killed = by_pid.pop(pid)
            assert holder
            os.kill(pid, signal.SIGKILL)
            assert killed.proc is not None
            killed.proc.wait(10)
            # a /start in the gap is answered after the takeover
            gap = sandbox.send("/start", user=users(9100 + round_, 1)[0], token=token)
            wait_until(lambda: holder_pid(client, token) in by_pid, timeout=TAKEOVER,
                       what="another process to take the polling lease")
            reply = sandbox.wait_for_bot_message(gap["chat_id"], after=gap["message_id"],
                                                 timeout=TAKEOVER, token=token)
            assert code_of(reply)
        (last,) = by_pid.values()
        assert holder_pid(client, token) == last.pid
        assert code_of(last.ask("/code", users(9200, 1)[0]))


def test_a_batch_held_by_a_killed_poller_is_answered_once_after_the_takeover(
    start_bot: BotStarter, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    token = make_token()
    bots = {bot.pid: bot for bot in (start_bot(token=token) for _ in range(2))}
    with redis_server.client() as client:
        wait_until(lambda: holder_pid(client, token) in bots, timeout=TAKEOVER,
                   what="a poller")
        sandbox.fault("sendMessage", token=token, hold=60, count=1000)
        people = users(8000, 30)
        sent = [sandbox.send("/code", user=user, token=token) for user in people]
        # the poller fetched the batch and issued codes; every reply is held
        wait_until(
            lambda: all(has_live_code(client, u["id"]) for u in people),
            timeout=20, what="the poller to issue every code",
        )
        pid = holder_pid(client, token)
        assert pid is not None
        assert all(not bot_replies(sandbox, token, s) for s in sent)
        os.kill(pid, signal.SIGKILL)
        killed = bots.pop(pid)
        assert killed.proc is not None
        killed.proc.wait(10)
        sandbox.fault("sendMessage", token=token, count=0)  # Telegram answers again

        wait_until(lambda: all_confirmed(sandbox, token), timeout=60,
                   what="every update to be handled and confirmed")
        for user, message in zip(people, sent, strict=True):
            replies = bot_replies(sandbox, token, message)
            assert len(replies) == 1, (user["id"], replies)
            assert_current_code(client, user["id"], replies[0])
    (survivor,) = bots.values()
    assert "Traceback" not in survivor.output()


def test_approve_taps_held_by_a_killed_poller_are_decided_once_after_the_takeover(
    start_bot: BotStarter, sandbox: TelegramSandbox, redis_server: RedisServer,
    redis_url: str,
) -> None:
    token = make_token()
    bots = {bot.pid: bot for bot in (start_bot(token=token) for _ in range(2))}
    first = next(iter(bots.values()))
    people = users(8500, 5)
    prompts = []
    for user in people:
        created = create(redis_url)
        prompts.append((created, first.ask(created.start_command, user)))
    with redis_server.client() as client:
        sandbox.fault("editMessageText", token=token, hold=60, count=1000)
        taps = [
            sandbox.tap(prompt["chat"]["id"], prompt["message_id"],
                        prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
                        user=user, token=token)
            for user, (_, prompt) in zip(people, prompts, strict=True)
        ]
        wait_until(lambda: all(sandbox.callback_answer(t["callback_query_id"]) for t in taps),
                   timeout=20, what="every tap decided (answered, its edit held)")
        pid = holder_pid(client, token)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        bots.pop(pid)
        sandbox.fault("editMessageText", token=token, count=0)
        wait_until(lambda: all_confirmed(sandbox, token), timeout=60,
                   what="every tap to be handled and confirmed")
    for user, (created, prompt) in zip(people, prompts, strict=True):
        (edited,) = [m for m in sandbox.messages(prompt["chat"]["id"], token=token)
                     if m["message_id"] == prompt["message_id"]]
        assert edited["edit_count"] == 1, edited
        assert "reply_markup" not in edited
        result = poll(redis_url, created)
        assert result.status == "approved"
        assert result.redemption is not None and result.redemption.user["id"] == user["id"]


def test_sigterm_finishes_updates_in_hand_and_leaves_the_rest_to_the_next_poller(
    start_bot: BotStarter, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    token = make_token()
    people = users(7000, 10)
    # queued before any bot polls: the first poller fetches them in one batch
    sent = [sandbox.send(text, user=user, token=token)
            for user in people for text in ("/code", "/help", "/help")]
    sandbox.fault("sendMessage", token=token, hold=4, count=len(people))
    bots = {bot.pid: bot for bot in (start_bot(token=token, wait=False) for _ in range(2))}
    with redis_server.client() as client:
        # each chat's first update is in hand (its code issued, its reply held); the
        # chats' later updates wait behind it
        wait_until(lambda: all(has_live_code(client, u["id"]) for u in people),
                   timeout=30, what="the first update of every chat to be in hand")
        pid = holder_pid(client, token)
        assert pid is not None
        assert all(not bot_replies(sandbox, token, s) for s in sent)
        stopping = bots.pop(pid)
        assert stopping.proc is not None
        stopping.proc.send_signal(signal.SIGTERM)
        assert stopping.proc.wait(10) == 0, stopping.output()
        (survivor,) = bots.values()
        wait_until(lambda: holder_pid(client, token) == survivor.pid, timeout=TAKEOVER,
                   what="the other process to take over")
        wait_until(lambda: all_confirmed(sandbox, token), timeout=30,
                   what="every update to be handled and confirmed")
        for user in people:
            chat = [m for m in sandbox.messages(user["id"], token=token) if m["from_bot"]]
            assert len(chat) == 3, chat
            assert_current_code(client, user["id"], chat[0])
    assert "Traceback" not in stopping.output()
    # the stopping process answered what it held, and only that
    assert stopping.output().count("issued a code") == len(people)
    assert "issued a code" not in survivor.output()


def test_a_bot_api_that_starts_its_ids_again_is_not_swallowed(
    bot: BotProcess, sandbox: TelegramSandbox
) -> None:
    first = bot.send("/code", ANN)
    assert first["update_id"] == 1
    code = code_of(sandbox.wait_for_bot_message(first["chat_id"], after=first["message_id"],
                                                timeout=20, token=bot.token))
    second = int(time.time()) + 1
    wait_until(lambda: time.time() >= second, timeout=5, what="the next second")
    # the Bot API restarts, forgetting everything (ids start at 1 again); Redis keeps all
    sandbox.stop()
    sandbox.start()
    again = bot.send("/code", ANN)
    assert again["update_id"] == 1
    reply = sandbox.wait_for_bot_message(again["chat_id"], after=again["message_id"],
                                         timeout=20, token=bot.token)
    assert code_of(reply) != code


@pytest.mark.parametrize("text", ["/code", "/help"])
def test_two_bots_on_one_redis_answer_the_same_update_ids(
    start_bot: BotStarter, text: str
) -> None:
    one, two = start_bot(), start_bot()
    sent_one, sent_two = one.send(text, ANN), two.send(text, ANN)
    assert sent_one["update_id"] == sent_two["update_id"] == 1
    for bot, sent in ((one, sent_one), (two, sent_two)):
        bot.sandbox.wait_for_bot_message(sent["chat_id"], after=sent["message_id"],
                                         timeout=20, token=bot.token)


def test_a_409_makes_the_poller_give_way_instead_of_fighting(
    bot: BotProcess, sandbox: TelegramSandbox, redis_server: RedisServer
) -> None:
    """Someone else polls with the same token (a stray bot outside the lease): Telegram
    answers our poller 409, and it gives its lease back and waits, rather than taking
    the poll back at once, again and again."""
    with redis_server.client() as client:
        wait_until(lambda: holder_pid(client, bot.token) == bot.pid, timeout=TAKEOVER,
                   what="the bot to poll")
        for _ in range(6):  # about 12 s of a stranger's 2 s long polls
            sandbox.api(bot.token, "getUpdates", timeout=2)
        # the first 409 went to our poller; after it, it stayed away (a lease length)
        assert sandbox.bot_summary(bot.token)["conflicts"] <= 2
        assert "making room" in bot.output()
    assert code_of(bot.ask("/code", ANN))  # and it polls again once the stranger is gone


def test_one_chat_with_a_backlog_does_not_hold_up_the_others(
    bot: BotProcess, sandbox: TelegramSandbox
) -> None:
    """Thirty messages from one user take ten seconds to answer (three per three
    seconds to one chat); another user's message is answered meanwhile."""
    flood_user, other = users(9500, 2)
    noisy = [bot.send("/help", flood_user) for _ in range(30)]
    quiet = bot.send("/help", other)
    sandbox.wait_for_bot_message(quiet["chat_id"], after=quiet["message_id"], timeout=20,
                                 token=bot.token)
    answered = [m for m in sandbox.messages(flood_user["id"], token=bot.token) if m["from_bot"]]
    assert len(answered) < len(noisy), "the other user waited for the whole backlog"
    wait_until(lambda: all_confirmed(sandbox, bot.token), timeout=60,
               what="the backlog to be answered")
    answered = [m for m in sandbox.messages(flood_user["id"], token=bot.token) if m["from_bot"]]
    assert len(answered) == len(noisy)


@pytest.mark.parametrize("what", ["bot api", "redis"])
def test_sigterm_while_starting_stops_at_once(
    start_bot: BotStarter, what: str, tmp_path: Any
) -> None:
    """A Bot API or a Redis that does not answer holds the start; a stop still stops."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    port = silent.getsockname()[1]
    env = ({"TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{port}/bot"} if what == "bot api"
           else {"redis_url": f"redis://127.0.0.1:{port}/0"})
    try:
        bot = start_bot(wait=False, **env)
        assert bot.proc is not None
        wait_until(lambda: "Bot API not reachable yet" in bot.output() or what == "redis",
                   timeout=30, what="the start to be held up")
        if what == "redis":
            wait_until(lambda: "Redis" in bot.output() or "started" in bot.output(),
                       timeout=30, what="the start to reach Redis")
        bot.proc.send_signal(signal.SIGTERM)
        assert bot.proc.wait(10) == 0, bot.output()
        assert "Traceback" not in bot.output()
    finally:
        silent.close()
