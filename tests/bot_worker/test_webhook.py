"""Webhook mode: bot processes sharing one listening socket (as supervisord's
fcgi-program hands it over), the sandbox posting updates with Telegram's retries.

The test opens the socket and gives it to each `python -m bot_worker --fd 0`
as its standard input, exactly as supervisord does.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from shared import keys
from shared.settings import load_settings
from tests.bot_worker.test_fleet import all_confirmed, assert_current_code, bot_replies, users
from tests.bot_worker.test_login_links import create, poll
from tests.fixtures.bot import ANN, AUTH_SECRET, BotProcess, BotStarter, buttons, code_of
from tests.fixtures.codes import has_live_code
from tests.fixtures.common import wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token

PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
JSON = dict[str, Any]


class Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def env(self) -> dict[str, str]:
        return {"BOT_MODE": "webhook", "WEBHOOK_URL": self.url}


@pytest.fixture
def listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.sock.close()


def start_fleet(start_bot: BotStarter, listener: Listener, token: str, n: int) -> list[BotProcess]:
    return [start_bot(token=token, fd=listener.sock.fileno(), **listener.env()) for _ in range(n)]


def webhook_set(sandbox: TelegramSandbox, token: str, url: str) -> bool:
    return bool(sandbox.bot_summary(token)["webhook_url"] == url)


def the_secret() -> str:
    settings = load_settings(env={"AUTH_SECRET": AUTH_SECRET}, env_file="/nonexistent")
    return settings.webhook_secret.reveal()


def test_a_webhook_fleet_sets_the_webhook_once_and_answers_codes_and_logins(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener,
    redis_server: RedisServer, redis_url: str,
) -> None:
    token = make_token()
    bots = start_fleet(start_bot, listener, token, 3)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    info = sandbox.api(token, "getWebhookInfo").json()["result"]
    assert info["max_connections"] == 40
    assert info["allowed_updates"] == ["message", "channel_post", "callback_query"]

    with redis_server.client() as client:
        for user in users(6000, 6):
            assert_current_code(client, user["id"], bots[0].ask("/code", user))
    created = create(redis_url)
    prompt = bots[0].ask(created.start_command, ANN)
    approve, _ = buttons(prompt)
    tap = sandbox.tap(prompt["chat"]["id"], prompt["message_id"], approve["callback_data"],
                      user=ANN, token=token)
    assert sandbox.callback_answer(tap["callback_query_id"], wait=20) is not None
    assert poll(redis_url, created).status == "approved"

    # a restarted process does not set it again: one setWebhook for the fleet, ever
    bots[1].stop()
    bots[1].start()
    assert bots[1].ask("/help", ANN)
    calls = sandbox.bot_summary(token)["calls"]
    assert calls.get("setwebhook") == 1, calls
    assert "getupdates" not in calls
    for bot in bots:
        assert "Traceback" not in bot.output()


def test_a_request_without_the_secret_token_is_refused(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener
) -> None:
    token = make_token()
    start_fleet(start_bot, listener, token, 1)
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "text": "/code",
                                          "chat": {"id": 1, "type": "private"}}}
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert http.post(listener.url, json=update).status_code == 403
        wrong = {SECRET_HEADER: "not-the-secret"}
        assert http.post(listener.url, json=update, headers=wrong).status_code == 403
        right = {SECRET_HEADER: the_secret()}
        assert http.post(listener.url, content=b"\xff{", headers=right).status_code == 400
        assert http.post(listener.url, json=[1], headers=right).status_code == 400
        assert http.get(listener.url, headers=right).status_code == 405
        assert http.post(listener.url + "x", json=update, headers=right).status_code == 404
    assert 1 not in sandbox.bot_summary(token)["chats"]


def test_an_update_whose_process_is_killed_is_retried_by_telegram_and_answered_once(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener,
    redis_server: RedisServer,
) -> None:
    token = make_token()
    bots = start_fleet(start_bot, listener, token, 2)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    sandbox.fault("sendMessage", token=token, hold=60, count=1000)
    people = users(6100, 4)
    sent = [sandbox.send("/code", user=user, token=token) for user in people]
    with redis_server.client() as client:
        wait_until(lambda: all(has_live_code(client, u["id"]) for u in people),
                   timeout=20, what="the codes to be issued (replies held)")
        for bot in bots:  # whichever process holds them dies without answering
            assert bot.proc is not None
            os.kill(bot.proc.pid, signal.SIGKILL)
            bot.proc.wait(10)
        sandbox.fault("sendMessage", token=token, count=0)
        start_fleet(start_bot, listener, token, 1)
        wait_until(lambda: all_confirmed(sandbox, token), timeout=60,
                   what="Telegram's retries to be answered 200")
        for user, message in zip(people, sent, strict=True):
            replies = bot_replies(sandbox, token, message)
            assert len(replies) == 1, replies
            assert_current_code(client, user["id"], replies[0])


def test_switching_back_to_polling_deletes_the_webhook(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener,
    redis_server: RedisServer,
) -> None:
    token = make_token()
    (hooked,) = start_fleet(start_bot, listener, token, 1)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    hooked.stop()
    polling = start_bot(token=token)
    assert code_of(polling.ask("/code", ANN))
    assert sandbox.bot_summary(token)["webhook_url"] is None
    with redis_server.client() as client:
        assert not client.exists(keys.webhook(polling.bot_id))
    polling.stop()
    # and back to webhook mode: set again
    start_fleet(start_bot, listener, token, 1)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set again")
    assert sandbox.bot_summary(token)["calls"]["setwebhook"] == 2


def _max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window of `window` seconds."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_flood_limits_hold_across_three_processes_and_a_429_holds_them_all(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener
) -> None:
    """BOT_SEND_RATE=20 for the fleet, under the sandbox's (Telegram's) 30: the three
    processes together stay at 20 a second, so the sandbox never has to refuse one; an
    injected 429 holds every process for its retry_after."""
    token = make_token()
    bots = [start_bot(token=token, fd=listener.sock.fileno(), BOT_SEND_RATE="20",
                      **listener.env()) for _ in range(3)]
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    people = users(6500, 150)
    sent = [sandbox.send("/start", user=user, token=token) for user in people]
    wait_until(lambda: sum(c["status"] == 200 for c in
                           sandbox.calls(token, method="sendMessage")) >= 40,
               timeout=30, what="40 replies")
    sandbox.fault("sendMessage", token=token, error_code=429, retry_after=3, count=1)
    wait_until(lambda: all_confirmed(sandbox, token), timeout=90, what="every reply")

    calls = sandbox.calls(token, method="sendMessage")
    sent_ok = [c for c in calls if c["status"] == 200]
    assert sorted(c["chat_id"] for c in sent_ok) == sorted(u["id"] for u in people)
    for message in sent:
        assert len(bot_replies(sandbox, token, message)) == 1
    # 20 a second for the fleet, with a little slack for when each send reaches the
    # sandbox: three processes limiting themselves alone would reach the sandbox's 30
    assert _max_in_window([c["t"] for c in sent_ok], 1.0) <= 24
    refused = [c for c in calls if c["status"] == 429]
    flood = next(c for c in refused if c.get("retry_after") == 3)
    # the 429 held every process: nothing was sent before its retry_after had passed
    assert not [c for c in sent_ok if flood["t"] < c["t"] < flood["t"] + 3]
    # and outside that wait the sandbox's own limits never had to refuse
    later = [c for c in refused if not flood["t"] <= c["t"] <= flood["t"] + 3]
    assert later == [], later
    # the limits were shared, not each process's own: several processes did the sending
    assert sum("issued a code" in bot.output() for bot in bots) >= 2


def test_a_user_who_blocked_the_bot_ends_the_conversation_quietly(
    bot: BotProcess, sandbox: TelegramSandbox
) -> None:
    sandbox.block(ANN["id"], token=bot.token)
    sent = bot.send("/code", ANN)
    wait_until(lambda: all_confirmed(sandbox, bot.token), timeout=20,
               what="the update to be confirmed")
    wait_until(lambda: "refused the reply" in bot.output(), timeout=10, what="the log line")
    log = bot.output()
    assert log.count("refused the reply") == 1
    assert "Traceback" not in log and " ERROR " not in log
    assert not bot_replies(sandbox, bot.token, sent)
    sends = sandbox.calls(bot.token, method="sendMessage")
    assert len(sends) == 1 and sends[0]["status"] == 403  # no "temporarily unavailable" try
    sandbox.block(ANN["id"], blocked=False, token=bot.token)
    assert code_of(bot.ask("/code", ANN))


def test_bad_updates_with_the_right_secret_are_400_never_500(
    start_bot: BotStarter, listener: Listener
) -> None:
    (bot,) = start_fleet(start_bot, listener, make_token(), 1)
    right = {SECRET_HEADER: the_secret(), "Content-Type": "application/json"}
    nested = b'{"update_id": 1, "message": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bodies = [
        b'{"update_id": "1"}',
        b'{"update_id": 1.5}',
        b'{"update_id": 1, "message": "text"}',
        b'{"update_id": 1, "message": {"message_id": 1, "date": 99999999999999999999,'
        b' "chat": {"id": 1, "type": "private"}}}',
        b'{"update_id": 1, "callback_query": {"id": 5}}',
        nested,
        b"null",
    ]
    with httpx.Client(timeout=10, trust_env=False) as http:
        for body in bodies:
            response = http.post(listener.url, content=body, headers=right)
            assert response.status_code == 400, (body[:60], response.text)
    assert "Traceback" not in bot.output()


def test_the_same_update_twice_at_one_process_is_answered_once(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener
) -> None:
    """A webhook retry can reach the process still handling the first delivery."""
    token = make_token()
    (bot,) = start_fleet(start_bot, listener, token, 1)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    sandbox.api(token, "deleteWebhook")  # the test delivers by hand from here
    sent = sandbox.send("/help", user=ANN, token=token)
    (update,) = sandbox.api(token, "getUpdates").json()["result"]
    sandbox.fault("sendMessage", token=token, hold=3, count=1)
    right = {SECRET_HEADER: the_secret()}
    with ThreadPoolExecutor(2) as pool, httpx.Client(timeout=30, trust_env=False) as http:
        first = pool.submit(http.post, listener.url, json=update, headers=right)
        wait_until(lambda: sandbox.bot_summary(token)["held_calls"].get("sendmessage"),
                   timeout=10,
                   what="the first delivery's reply to be held")
        second = pool.submit(http.post, listener.url, json=update, headers=right)
        assert first.result().status_code == second.result().status_code == 200
    assert len(bot_replies(sandbox, token, sent)) == 1
    assert not first.exception() and bot.running()


def test_a_lost_webhook_is_set_again(
    start_bot: BotStarter, sandbox: TelegramSandbox, listener: Listener
) -> None:
    """Someone deletes the webhook (a stray poller with the token, a Bot API that forgot
    it): the fleet notices within a check period and sets it again."""
    token = make_token()
    (bot,) = start_fleet(start_bot, listener, token, 1)
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=20,
               what="the webhook to be set")
    sandbox.api(token, "deleteWebhook")
    wait_until(lambda: webhook_set(sandbox, token, listener.url), timeout=40,
               what="the webhook to be set again")
    assert sandbox.bot_summary(token)["calls"]["setwebhook"] == 2
    assert code_of(bot.ask("/code", ANN))


def test_a_taken_port_is_one_line_and_no_traceback(
    start_bot: BotStarter, listener: Listener, tmp_path: Any
) -> None:
    bot = start_bot(wait=False, BOT_PORT=str(listener.port), **listener.env())
    assert bot.proc is not None
    assert bot.proc.wait(20) == 1
    output = bot.output()
    assert f"cannot listen on 127.0.0.1:{listener.port}" in output
    assert "Traceback" not in output
