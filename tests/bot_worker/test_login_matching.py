"""Number matching for OpenID Connect logins: real bot processes, the Telegram sandbox,
real Redis.

Authorization requests are created with `shared.logins` exactly as the authorization
page creates them; taps are the sandbox's callback queries.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot_worker import messages
from bot_worker.handlers import APPROVE, DENY, PICK, Tap, match_choices, parse_tap
from shared.logins import (
    MATCH_HIGH,
    MATCH_LOW,
    Authorization,
    AuthorizationResult,
    CreatedAuthorization,
)
from shared.settings import Settings, load_settings
from tests.fixtures.bot import ANN, AUTH_SECRET, IVAN, BotProcess, Message, answer_and_edit, buttons
from tests.fixtures.store import run_on_logins

PAGE = Authorization(
    client_id="shop", client_name="Shop", host="shop.example",
    redirect_uri="https://shop.example/callback", code_challenge="c" * 43, nonce="n",
    scope="openid", state="st",
)


def settings_for(redis_url: str) -> Settings:
    return load_settings(
        env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url,
             "TELEGRAM_BOT_USERNAME": "any_bot"},
        env_file="/nonexistent",
    )


def authorize(redis_url: str) -> CreatedAuthorization:
    return run_on_logins(
        settings_for(redis_url), lambda logins: logins.create_authorization(PAGE, "10.0.0.1")
    )


def outcome(redis_url: str, created: CreatedAuthorization) -> AuthorizationResult:
    result = run_on_logins(
        settings_for(redis_url), lambda logins: logins.poll_authorization(created.login.id)
    )
    assert result is not None
    return result


def numbered_prompt(bot: BotProcess, created: CreatedAuthorization, user: Message) -> Message:
    """`/start <payload>` as `user`; checks the keyboard (three distinct numbers, one of
    them the page's, in one row; Deny below) and returns the prompt."""
    prompt = bot.ask(created.login.start_command, user)
    rows = prompt["reply_markup"]["inline_keyboard"]
    assert [len(row) for row in rows] == [3, 1], rows
    numbers = [int(button["text"]) for button in rows[0]]
    assert len(set(numbers)) == 3 and created.match in numbers
    assert all(MATCH_LOW <= n <= MATCH_HIGH for n in numbers)
    for button in buttons(prompt):
        data = button["callback_data"]
        assert len(data.encode()) <= 64 and data.endswith(created.login.payload)
        assert created.login.id not in data
    assert rows[1][0]["callback_data"] == DENY + created.login.payload
    return prompt


def number_button(prompt: Message, right: bool, match: int) -> str:
    """The callback data of the page's number (`right`) or of a decoy."""
    for button in prompt["reply_markup"]["inline_keyboard"][0]:
        if (int(button["text"]) == match) == right:
            return str(button["callback_data"])
    raise AssertionError(prompt)


def tap(bot: BotProcess, prompt: Message, user: Message, data: str) -> tuple[Any, Message]:
    """Tap with callback `data` as `user`: the callback answer and the edited prompt."""
    sent = bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], data, user, bot.token)
    return answer_and_edit(bot, prompt, sent["callback_query_id"])


def test_the_page_number_approves(bot: BotProcess, redis_url: str) -> None:
    created = authorize(redis_url)
    prompt = numbered_prompt(bot, created, ANN)
    assert prompt["text"].startswith("Log in to Shop at shop.example?\n\n")
    assert "Pick the number shown on the login page" in prompt["text"]
    assert prompt["reply_markup"]["inline_keyboard"][1][0]["text"] == "Deny"
    assert outcome(redis_url, created).status == "pending"

    answer, edited = tap(bot, prompt, ANN, number_button(prompt, True, created.match))
    assert answer["text"] == edited["text"] == "You are logged in to Shop at shop.example."
    assert not buttons(edited)
    result = outcome(redis_url, created)
    assert result.status == "approved"
    assert result.user is not None and result.user["id"] == ANN["id"]
    assert result.authorization == PAGE


def test_another_number_denies_in_russian(bot: BotProcess, redis_url: str) -> None:
    created = authorize(redis_url)
    prompt = numbered_prompt(bot, created, IVAN)
    assert prompt["text"].startswith("Войти в «Shop» на shop.example?\n\n")
    assert "Выберите число" in prompt["text"]
    assert prompt["reply_markup"]["inline_keyboard"][1][0]["text"] == "Отклонить"

    _, edited = tap(bot, prompt, IVAN, number_button(prompt, False, created.match))
    assert edited["text"] == messages.login_mismatch("ru") and not buttons(edited)
    assert outcome(redis_url, created).status == "denied"
    # the link again, after the decision: no buttons, just what happened
    again = bot.ask(created.login.start_command, IVAN)
    assert "уже отклонён" in again["text"] and not buttons(again)


def forged(bot: BotProcess, prompt: Message, data: str) -> Message:
    """A message in the prompt's chat with one button carrying `data`, sent with the bot's
    token: how a test makes the sandbox deliver a callback the bot never offered (the
    sandbox, like Telegram, only takes taps on buttons a message has)."""
    keyboard = {"inline_keyboard": [[{"text": "?", "callback_data": data}]]}
    response = bot.sandbox.api(
        bot.token, "sendMessage", chat_id=prompt["chat"]["id"], text="forged",
        reply_markup=keyboard,
    )
    assert response.status_code == 200, response.text
    message: Message = response.json()["result"]
    return message


def test_a_forged_approve_denies(bot: BotProcess, redis_url: str) -> None:
    """An Approve callback (the ordinary requests' button) for a numbered request: no
    number, so a denial, never an approval."""
    created = authorize(redis_url)
    prompt = numbered_prompt(bot, created, ANN)
    data = APPROVE + created.login.payload
    _, edited = tap(bot, forged(bot, prompt, data), ANN, data)
    assert edited["text"] == messages.login_mismatch("en")
    result = outcome(redis_url, created)
    assert result.status == "denied" and result.user is None


def test_deny_names_the_client_and_host(bot: BotProcess, redis_url: str) -> None:
    created = authorize(redis_url)
    prompt = numbered_prompt(bot, created, ANN)
    _, edited = tap(bot, prompt, ANN, DENY + created.login.payload)
    assert edited["text"] == "Login to Shop at shop.example denied."
    assert outcome(redis_url, created).status == "denied"


def test_a_malformed_number_decides_nothing(bot: BotProcess, redis_url: str) -> None:
    created = authorize(redis_url)
    prompt = numbered_prompt(bot, created, ANN)
    data = f"{PICK}x{created.match}:{created.login.payload}"
    message = forged(bot, prompt, data)
    sent = bot.sandbox.tap(message["chat"]["id"], message["message_id"], data, ANN, bot.token)
    answer = bot.sandbox.callback_answer(sent["callback_query_id"], wait=20)
    assert answer is not None and "expired" in answer["text"]
    assert outcome(redis_url, created).status == "pending"
    # the page's number still works
    _, edited = tap(bot, prompt, ANN, number_button(prompt, True, created.match))
    assert edited["text"] == "You are logged in to Shop at shop.example."
    assert outcome(redis_url, created).status == "approved"


# -- pure functions ------------------------------------------------------------------------


@pytest.mark.parametrize("match", [MATCH_LOW, 55, MATCH_HIGH])
def test_match_choices_are_three_distinct_in_range_numbers(match: int) -> None:
    positions = set()
    for _ in range(200):
        choices = match_choices(match)
        assert len(choices) == len(set(choices)) == 3 and match in choices
        assert all(MATCH_LOW <= n <= MATCH_HIGH for n in choices)
        positions.add(choices.index(match))
    assert positions == {0, 1, 2}  # not always in the same place (1 in 3**199 to fail)


def test_parse_tap_reads_every_button_back() -> None:
    payload = "A" * 22
    assert parse_tap(APPROVE + payload) == Tap(approve=True, pick=None, payload=payload)
    assert parse_tap(DENY + payload) == Tap(approve=False, pick=None, payload=payload)
    assert parse_tap(f"{PICK}42:{payload}") == Tap(approve=True, pick=42, payload=payload)
    for malformed in (f"{PICK}{payload}", f"{PICK}x:{payload}", f"{PICK}123:{payload}",
                      f"{PICK}:{payload}", f"{PICK}٤٢:{payload}"):
        assert parse_tap(malformed) is None, malformed
