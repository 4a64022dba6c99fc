"""Push approvals across real processes: an API worker, bot workers, the Telegram sandbox.

A user logs in with a code (so the bot knows them and has a chat with them); the client
pushes an approval and holds `GET ?wait=30`; the bot sends the message; a tap, not the
poll's own deadline, answers the held GET.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from shared import keys
from shared.settings import load_settings
from shared.store import Store
from tests.fixtures.api import ApiProcess, ApiStarter
from tests.fixtures.bot import (
    ANN,
    AUTH_SECRET,
    IVAN,
    BotProcess,
    BotStarter,
    answer_and_edit,
    buttons,
    code_of,
)
from tests.fixtures.common import wait_until
from tests.fixtures.sandbox import make_token
from tests.fixtures.store import run_on_store

KEYS = "shop.example:shop-key-0123456789abcdefgh,blog.example:blog-key-0123456789abcdefgh"
SHOP = {"X-API-Key": "shop-key-0123456789abcdefgh"}
BLOG = {"X-API-Key": "blog-key-0123456789abcdefgh"}
PATH = "/v1/approvals"
HOLD = 30  # the longest `wait`: a poll answered well before it was woken
WOKEN_WITHIN = 20.0
BOB: dict[str, Any] = {"id": 5004, "first_name": "Bob", "username": "bob", "language_code": "en"}
Message = dict[str, Any]


@pytest.fixture
def start_system(
    start_api: ApiStarter, start_bot: BotStarter
) -> Callable[..., tuple[ApiProcess, BotProcess]]:
    def start(**env: str) -> tuple[ApiProcess, BotProcess]:
        bot = start_bot(**env)
        api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, LOG_LEVEL="DEBUG", **env)
        return api, bot

    return start


@pytest.fixture
def system(
    start_system: Callable[..., tuple[ApiProcess, BotProcess]],
) -> tuple[ApiProcess, BotProcess]:
    return start_system()


def log_in(api: ApiProcess, bot: BotProcess, user: Message) -> None:
    """The user logs in with a code from the bot: from now on the bot knows them."""
    code = code_of(bot.ask("/code", user))
    response = httpx.post(f"{api.url}/v1/codes/redeem", json={"code": code}, headers=SHOP)
    assert response.status_code == 200, response.text


def push(api: ApiProcess, user: Message, headers: dict[str, str] = SHOP,
         **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{api.url}{PATH}", json={"user_id": user["id"], "text": "Pay 25.00 EUR", **body},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def latest(bot: BotProcess, user: Message) -> int:
    """The id of the last message in the user's chat with the bot (0: none)."""
    found = bot.messages(user["id"])
    return int(found[-1]["message_id"]) if found else 0


def message_after(bot: BotProcess, user: Message, after: int) -> Message:
    try:
        return bot.sandbox.wait_for_bot_message(user["id"], after=after, timeout=40,
                                                token=bot.token)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; bot log:\n{bot.output()}") from None


def status(api: ApiProcess, approval_id: str, headers: dict[str, str] = SHOP,
           **params: Any) -> httpx.Response:
    return httpx.get(f"{api.url}{PATH}/{approval_id}", params=params, headers=headers,
                     timeout=HOLD + 15)


def held(pool: ThreadPoolExecutor, api: ApiProcess,
         approval_id: str) -> Future[tuple[httpx.Response, float]]:
    """`GET ?wait=HOLD` in `pool`, returned once the API holds it."""
    before = api.output().count("login poll held")

    def timed() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = status(api, approval_id, wait=HOLD)
        return response, time.monotonic() - started

    poll = pool.submit(timed)
    wait_until(lambda: api.output().count("login poll held") > before, timeout=15,
               what="the poll to be held")
    return poll


def woken(poll: Future[tuple[httpx.Response, float]]) -> dict[str, Any]:
    response, took = poll.result(timeout=HOLD + 20)
    assert response.status_code == 200, response.text
    assert took < WOKEN_WITHIN, f"answered after {took:.1f} s: by its deadline, not woken"
    body: dict[str, Any] = response.json()
    return body


def answered_soon(api: ApiProcess, approval_id: str) -> dict[str, Any]:
    """`GET ?wait=HOLD`, answered well before its deadline."""
    started = time.monotonic()
    response = status(api, approval_id, wait=HOLD)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took < WOKEN_WITHIN, f"answered after {took:.1f} s: by its deadline"
    body: dict[str, Any] = response.json()
    return body


def tap(bot: BotProcess, prompt: Message, data: str, user: Message = ANN) -> str:
    tapped = bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], data, user, bot.token)
    return str(tapped["callback_query_id"])


def quote(message: Message) -> str:
    """The text under the message's one blockquote entity."""
    (entity,) = [e for e in message.get("entities", []) if e["type"] == "blockquote"]
    units = message["text"].encode("utf-16-le")
    first, last = entity["offset"] * 2, (entity["offset"] + entity["length"]) * 2
    return units[first:last].decode("utf-16-le")


def test_approve_wakes_the_held_poll(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    created = push(api, ANN, state="order-7")
    with ThreadPoolExecutor(1) as pool:
        poll = held(pool, api, created["id"])
        prompt = message_after(bot, ANN, after)
        assert prompt["text"].startswith("shop.example asks you to confirm:\n\n")
        assert quote(prompt) == "Pay 25.00 EUR"
        approve, deny = buttons(prompt)
        assert (approve["text"], deny["text"]) == ("Approve", "Deny")
        assert created["id"] not in str(prompt)  # buttons carry a hash, never the id
        assert not poll.done()
        query = tap(bot, prompt, approve["callback_data"])
        body = woken(poll)
    assert body["status"] == "approved" and body["state"] == "order-7"
    assert body["user"]["id"] == ANN["id"] and body["user"]["username"] == "ann"
    answer, edited = answer_and_edit(bot, prompt, query)
    assert edited["text"].startswith("You approved this for shop.example:")
    assert quote(edited) == "Pay 25.00 EUR" and not buttons(edited)
    assert answer["text"].startswith("You approved")
    assert created["id"] not in bot.output()


def test_deny_then_the_first_decision_stands(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    sandbox = bot.sandbox
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    created = push(api, ANN)
    with ThreadPoolExecutor(1) as pool:
        poll = held(pool, api, created["id"])
        prompt = message_after(bot, ANN, after)
        approve, deny = (b["callback_data"] for b in buttons(prompt))
        # the first tap's edit waits, so the buttons are still there for a second tap
        sandbox.fault("editMessageText", token=bot.token, hold=30, count=1)
        first = tap(bot, prompt, deny)
        assert woken(poll)["status"] == "denied"
    wait_until(lambda: sandbox.bot_summary(bot.token)["held_calls"].get("editmessagetext"),
               timeout=20, what="the first tap's edit")
    second = tap(bot, prompt, approve)  # a double tap
    sandbox.release("editMessageText", token=bot.token)
    answer = sandbox.callback_answer(first, wait=20)
    assert answer is not None and answer["text"].startswith("You denied this for shop.example")
    answer = sandbox.callback_answer(second, wait=20)
    assert answer is not None and "already denied" in answer["text"], answer
    assert status(api, created["id"]).json()["status"] == "denied"


def test_a_numbered_approval_right_number_approves_wrong_denies(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, bot = system
    log_in(api, bot, ANN)
    outcomes = []
    for right in (True, False):
        after = latest(bot, ANN)
        created = push(api, ANN, match=True)
        number = created["match_number"]
        prompt = message_after(bot, ANN, after)
        assert "Pick the number shop.example shows you" in prompt["text"]
        *numbers, deny = buttons(prompt)
        assert deny["text"] == "Deny" and len(numbers) == 3
        assert str(number) in [b["text"] for b in numbers]
        chosen = next(b for b in numbers if (b["text"] == str(number)) == right)
        query = tap(bot, prompt, chosen["callback_data"])
        _, edited = answer_and_edit(bot, prompt, query)
        outcomes.append((status(api, created["id"]).json()["status"], edited["text"]))
    (approved, approved_text), (denied, denied_text) = outcomes
    assert approved == "approved" and approved_text.startswith("You approved")
    assert denied == "denied" and denied_text.startswith("That was not the number")


def test_expired_approval_says_so_in_the_api_and_the_bot(
    start_system: Callable[..., tuple[ApiProcess, BotProcess]],
) -> None:
    api, bot = start_system(APPROVAL_TTL_SECONDS="3")
    sandbox = bot.sandbox
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    created = push(api, ANN)
    prompt = message_after(bot, ANN, after)
    # the bot's own edit at the expiry waits, so the buttons are still there for a tap
    sandbox.fault("editMessageText", token=bot.token, hold=30, count=1)
    assert answered_soon(api, created["id"]) == {"status": "expired"}  # at the expiry
    wait_until(lambda: sandbox.bot_summary(bot.token)["held_calls"].get("editmessagetext"),
               timeout=20, what="the bot to take the expired approval's buttons off")
    query = tap(bot, prompt, buttons(prompt)[0]["callback_data"])
    answer = sandbox.callback_answer(query, wait=20)
    assert answer is not None and answer["text"].startswith("This request has expired")
    sandbox.release("editMessageText", token=bot.token)
    _, edited = answer_and_edit(bot, prompt, query)
    assert edited["text"].startswith("This request has expired") and not buttons(edited)
    assert quote(edited) == "Pay 25.00 EUR"
    assert status(api, created["id"]).json() == {"status": "expired"}


def test_unknown_user_is_404(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    code_of(bot.ask("/code", BOB))  # got a code, never logged in with it: unknown
    response = httpx.post(f"{api.url}{PATH}", json={"user_id": BOB["id"], "text": "Pay"},
                          headers=SHOP)
    assert response.status_code == 404 and response.json()["error"] == "unknown_user"


def test_a_user_who_blocked_the_bot_is_undeliverable_at_once(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    api, bot = system
    log_in(api, bot, ANN)
    bot.sandbox.block(ANN["id"], token=bot.token)
    created = push(api, ANN)
    assert answered_soon(api, created["id"]) == {"status": "undeliverable"}
    assert bot.running()
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "tglogin_approvals_undeliverable_total 1" in metrics


def test_a_known_user_with_no_chat_is_undeliverable(
    system: tuple[ApiProcess, BotProcess],
) -> None:
    """Logged in through another bot of the same deployment's past, or a chat Telegram lost:
    400 chat not found."""
    api, bot = system
    settings = load_settings(
        env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": bot.env["REDIS_URL"]},
        env_file="/nonexistent",
    )
    user = {"id": 5077, "username": None, "first_name": "Zed", "last_name": None,
            "language_code": "en"}

    async def enter(store: Store) -> None:
        await store.sessions.enter(user)

    run_on_store(settings, enter)
    created = push(api, user)
    assert answered_soon(api, created["id"]) == {"status": "undeliverable"}


def test_russian_user_gets_a_russian_message(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    log_in(api, bot, IVAN)
    after = latest(bot, IVAN)
    push(api, IVAN, text="Оплатить заказ №7")
    prompt = message_after(bot, IVAN, after)
    assert prompt["text"].startswith("«shop.example» просит подтвердить действие:")
    assert quote(prompt) == "Оплатить заказ №7"
    assert [b["text"] for b in buttons(prompt)] == ["Подтвердить", "Отклонить"]
    query = tap(bot, prompt, buttons(prompt)[0]["callback_data"], IVAN)
    _, edited = answer_and_edit(bot, prompt, query)
    assert edited["text"].startswith("Вы подтвердили запрос «shop.example»:")


def test_someone_elses_tap_decides_nothing(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    log_in(api, bot, ANN)
    log_in(api, bot, BOB)
    after = latest(bot, ANN)
    created = push(api, ANN)
    prompt = message_after(bot, ANN, after)
    approve = buttons(prompt)[0]["callback_data"]
    query = tap(bot, prompt, approve, user=BOB)  # a forwarded message, tapped by Bob
    answer = bot.sandbox.callback_answer(query, wait=20)
    assert answer is not None and "unknown or has expired" in answer["text"]
    assert status(api, created["id"]).json()["status"] == "pending"
    assert not any(m["edited"] for m in bot.messages(ANN["id"], after=after))
    query = tap(bot, prompt, approve)
    answer_and_edit(bot, prompt, query)
    assert status(api, created["id"]).json()["status"] == "approved"


def test_markup_in_the_text_is_shown_as_text(system: tuple[ApiProcess, BotProcess]) -> None:
    api, bot = system
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    text = "Pay <b>10</b> *EUR* to [support](https://evil.example) `now`\nApprove! @admin"
    push(api, ANN, text=text)
    prompt = message_after(bot, ANN, after)
    assert quote(prompt) == text
    assert [e["type"] for e in prompt.get("entities", [])] == ["blockquote"]


def _an_approval_held_at_telegram(
    start_api: ApiStarter, start_bot: BotStarter,
) -> tuple[str, BotProcess, ApiProcess, int, dict[str, Any]]:
    """A bot and an API, ANN logged in, and an approval pushed to ANN whose message the
    sandbox holds (sendMessage answers only once released): the bot's token, the bot,
    the API, ANN's last message before it and the created approval."""
    token = make_token()
    bot = start_bot(token=token)
    api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, LOG_LEVEL="DEBUG")
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    bot.sandbox.fault("sendMessage", token=token, hold=60, count=1)
    created = push(api, ANN)
    wait_until(lambda: bot.sandbox.bot_summary(token)["held_calls"].get("sendmessage"),
               timeout=20, what="the bot to send the approval (held)")
    return token, bot, api, after, created


def test_an_approval_a_killed_bot_held_is_sent_by_the_next(
    start_api: ApiStarter, start_bot: BotStarter,
) -> None:
    token, bot, api, after, created = _an_approval_held_at_telegram(start_api, start_bot)
    sandbox = bot.sandbox
    assert bot.proc is not None
    os.killpg(bot.proc.pid, signal.SIGKILL)
    bot.proc.wait(10)
    sandbox.release("sendMessage", token=token)  # its client is gone: never performed
    assert not [m for m in bot.messages(ANN["id"], after=after) if m["from_bot"]]

    successor = start_bot(token=token)
    prompt = message_after(successor, ANN, after)  # claimed after the entry sat idle
    assert quote(prompt) == "Pay 25.00 EUR"
    query = tap(successor, prompt, buttons(prompt)[0]["callback_data"])
    answer_and_edit(successor, prompt, query)
    assert status(api, created["id"]).json()["status"] == "approved"
    sent = [m for m in successor.messages(ANN["id"], after=after) if m["from_bot"]]
    assert len(sent) == 1, sent
    assert "claimed 1 approvals left pending" in successor.output()


def test_two_bot_processes_send_each_approval_once(
    start_api: ApiStarter, start_bot: BotStarter,
) -> None:
    token = make_token()
    bots = [start_bot(token=token) for _ in range(2)]
    api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, LOG_LEVEL="DEBUG")
    log_in(api, bots[0], ANN)
    after = latest(bots[0], ANN)
    texts = [f"Approval {n}" for n in range(4)]
    for text in texts:
        push(api, ANN, text=text)

    def prompts() -> list[Message]:
        return [m for m in bots[0].messages(ANN["id"], after=after) if m["from_bot"]]

    wait_until(lambda: len(prompts()) >= len(texts), timeout=40, what="every approval sent")
    assert sorted(quote(m) for m in prompts()) == texts  # each once, none twice

    def sent() -> int:  # logged once the bot noted the message: just after Telegram has it
        return sum(bot.output().count("sent an approval to user") for bot in bots)

    wait_until(lambda: sent() >= len(texts), timeout=10, what="every send noted")
    assert sent() == len(texts)


def test_a_webhook_mode_bot_sends_and_takes_taps(
    start_api: ApiStarter, start_bot: BotStarter,
) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/telegram/webhook"
        bot = start_bot(fd=sock.fileno(), BOT_MODE="webhook", WEBHOOK_URL=url)
        wait_until(lambda: bot.sandbox.bot_summary(bot.token)["webhook_url"] == url,
                   timeout=20, what="the webhook to be set")
        api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, LOG_LEVEL="DEBUG")
        log_in(api, bot, ANN)
        after = latest(bot, ANN)
        created = push(api, ANN)
        prompt = message_after(bot, ANN, after)
        query = tap(bot, prompt, buttons(prompt)[0]["callback_data"])
        answer_and_edit(bot, prompt, query)
        assert status(api, created["id"]).json()["status"] == "approved"


def _settings(bot: BotProcess) -> Any:
    return load_settings(
        env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": bot.env["REDIS_URL"]},
        env_file="/nonexistent",
    )


def test_an_approval_whose_queue_entry_was_lost_is_sent_at_its_check(
    start_api: ApiStarter, start_bot: BotStarter,
) -> None:
    """The last step of creating an approval (its queue entry) lost, as when the API
    process is killed between its steps: the bot's sweep finds the approval untaken at
    its check time (seconds after creation), queues it, and it is sent and decided."""
    token = make_token()
    bot = start_bot(token=token)
    api = start_api(AUTH_SECRET=AUTH_SECRET, API_KEYS=KEYS, LOG_LEVEL="DEBUG")
    log_in(api, bot, ANN)
    after = latest(bot, ANN)
    bot.stop()  # nobody reads the queue entry before it is lost
    created = push(api, ANN)

    async def lose(store: Store) -> None:
        assert await store.redis.delete(keys.APPROVAL_QUEUE) == 1

    run_on_store(_settings(bot), lose)
    successor = start_bot(token=token)
    prompt = message_after(successor, ANN, after)
    assert quote(prompt) == "Pay 25.00 EUR"
    assert "queued 1 approvals no bot had taken by their check time" in successor.output()
    query = tap(successor, prompt, buttons(prompt)[0]["callback_data"])
    answer_and_edit(successor, prompt, query)
    assert status(api, created["id"]).json()["status"] == "approved"
    sent = [m for m in successor.messages(ANN["id"], after=after) if m["from_bot"]]
    assert len(sent) == 1, sent


def test_a_second_message_after_a_send_cut_short_decides_the_same_approval(
    start_api: ApiStarter, start_bot: BotStarter,
) -> None:
    """A bot killed after Telegram took the approval's message but before it noted it: the
    next bot sends it again (exactly once is not possible). Harmless: a tap on either
    message decides the one approval, the bot edits both where it knows them, and the
    other message's tap is told it was already decided."""
    token, bot, api, after, created = _an_approval_held_at_telegram(start_api, start_bot)
    sandbox = bot.sandbox
    assert bot.proc is not None
    os.killpg(bot.proc.pid, signal.SIGSTOP)  # connected, but it will never note the send
    try:
        sandbox.release("sendMessage", token=token)  # Telegram takes the message
        first = message_after(bot, ANN, after)
    finally:
        os.killpg(bot.proc.pid, signal.SIGKILL)  # a stopped process dies as well
    bot.proc.wait(10)

    successor = start_bot(token=token)
    second = message_after(successor, ANN, first["message_id"])  # the entry, claimed
    assert quote(second) == quote(first) == "Pay 25.00 EUR"
    query = tap(successor, first, buttons(first)[0]["callback_data"])  # the unnoted one
    _, edited = answer_and_edit(successor, first, query)
    assert edited["text"].startswith("You approved") and not buttons(edited)
    assert status(api, created["id"]).json()["status"] == "approved"

    def noted_edited() -> Message | None:
        found = [m for m in successor.messages(ANN["id"], after=first["message_id"])
                 if m["message_id"] == second["message_id"] and m["edited"]]
        return found[0] if found else None

    other = wait_until(noted_edited, timeout=20, what="the noted message to be edited")
    assert other["text"].startswith("You approved") and not buttons(other)
    sent = [m for m in successor.messages(ANN["id"], after=after) if m["from_bot"]]
    assert len(sent) == 2, sent  # two messages, one decision
    assert "sending an approval to user 5001 again" in successor.output()
