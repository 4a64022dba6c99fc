# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""Deep-link logins in the bot: real bot processes, the Telegram sandbox, real Redis.

Requests are created with `shared.logins` exactly as the API creates them; taps
are the sandbox's callback queries.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot_worker import messages
from shared import keys
from shared.logins import CreatedLogin, PollResult
from shared.settings import ApiClient, Settings, load_settings
from tests.fixtures.bot import (
    ANN,
    AUTH_SECRET,
    IVAN,
    BotProcess,
    BotStarter,
    Message,
    answer_and_edit,
    buttons,
)
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox
from tests.fixtures.store import run_on_logins

GROUP: Message = {"id": -1001234567890, "type": "supergroup", "title": "Friends"}
API_KEYS = "shop.example:shop-key-0123456789abcdefgh"


def settings_for(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={
            "AUTH_SECRET": AUTH_SECRET,
            "REDIS_URL": redis_url,
            "TELEGRAM_BOT_USERNAME": "any_bot",
            **env,
        },
        env_file="/nonexistent",
    )


def shop(redis_url: str) -> ApiClient:
    (client,) = settings_for(redis_url, API_KEYS=API_KEYS).api_keys
    return client


def create(redis_url: str, client: ApiClient | None = None) -> CreatedLogin:
    settings = settings_for(redis_url)
    return run_on_logins(settings, lambda logins: logins.create(client, "st", "10.0.0.1"))


def poll(redis_url: str, created: CreatedLogin, client: ApiClient | None = None) -> PollResult:
    result = run_on_logins(settings_for(redis_url), lambda logins: logins.poll(created.id, client))
    assert result is not None
    return result


def prompt_for(bot: BotProcess, created: CreatedLogin, user: Message) -> Message:
    """`/start <payload>` as `user`; checks the buttons and returns the prompt."""
    prompt = bot.ask(created.start_command, user)
    approve, deny = buttons(prompt)
    for button in (approve, deny):
        data = button["callback_data"]
        assert len(data.encode()) <= 64 and created.payload in data
        assert created.id not in data
    return prompt


def tap(
    bot: BotProcess, prompt: Message, user: Message, which: int
) -> tuple[dict[str, Any], Message]:
    """Tap button `which` (0 Approve, 1 Deny) as `user`: the callback answer, the edited message."""
    data = buttons(prompt)[which]["callback_data"]
    sent = bot.sandbox.tap(prompt["chat"]["id"], prompt["message_id"], data, user, bot.token)
    return answer_and_edit(bot, prompt, sent["callback_query_id"])


def test_approve_logs_the_user_in_to_the_named_client(bot: BotProcess, redis_url: str) -> None:
    client = shop(redis_url)
    created = create(redis_url, client)
    prompt = prompt_for(bot, created, ANN)
    assert prompt["text"].startswith("Log in to shop.example?")
    assert [b["text"] for b in buttons(prompt)] == ["Approve", "Deny"]
    assert poll(redis_url, created, client).status == "pending"

    answer, edited = tap(bot, prompt, ANN, 0)
    assert answer["text"] == edited["text"] == "You are logged in to shop.example."
    assert not buttons(edited)
    result = poll(redis_url, created, client)
    assert result.status == "approved" and result.state == "st"
    assert result.redemption is not None and result.redemption.user["id"] == ANN["id"]
    assert result.redemption.user["username"] == "ann"


def test_deny_in_russian(bot: BotProcess, redis_url: str) -> None:
    client = shop(redis_url)
    created = create(redis_url, client)
    prompt = prompt_for(bot, created, IVAN)
    assert prompt["text"].startswith("Войти в «shop.example»?")
    assert [b["text"] for b in buttons(prompt)] == ["Подтвердить", "Отклонить"]
    _, edited = tap(bot, prompt, IVAN, 1)
    assert edited["text"] == "Вход в «shop.example» отклонён."
    assert poll(redis_url, created, client).status == "denied"
    # the link again, after the decision: no buttons, just what happened
    again = bot.ask(created.start_command, IVAN)
    assert "уже отклонён" in again["text"] and not buttons(again)


def test_open_api_requests_name_no_one(bot: BotProcess, redis_url: str) -> None:
    created = create(redis_url)
    assert prompt_for(bot, created, ANN)["text"].startswith("Log in to a website?")
    prompt = prompt_for(bot, created, IVAN)
    assert prompt["text"].startswith("Войти на сайт?")
    _, edited = tap(bot, prompt, IVAN, 0)
    assert edited["text"] == "Вы вошли на сайт."


def test_unknown_link_and_a_tap_on_an_expired_request(
    bot: BotProcess, redis_url: str, redis_server: RedisServer
) -> None:
    reply = bot.ask("/start " + "A" * 22, ANN)
    assert "unknown or has expired" in reply["text"] and not buttons(reply)

    created = create(redis_url)
    prompt = prompt_for(bot, created, ANN)
    with redis_server.client() as client:  # what expiry does
        client.delete(*client.scan_iter(match=keys.LOGIN_LINK + "*"))
    answer, edited = tap(bot, prompt, ANN, 0)
    assert answer["text"] == edited["text"]
    assert "has expired" in edited["text"] and not buttons(edited)


def test_in_a_group_the_bot_never_asks_and_points_to_a_private_chat(
    bot: BotProcess, redis_url: str
) -> None:
    created = create(redis_url)
    hint = bot.ask(created.start_command, ANN, chat=GROUP)
    assert "private chat" in hint["text"]
    assert all("callback_data" not in b for b in buttons(hint))
    assert poll(redis_url, created).status == "pending"


def test_two_users_approving_at_once_exactly_one_wins(
    start_bot: BotStarter, redis_url: str, sandbox: TelegramSandbox
) -> None:
    """Two bot processes (one per user), so the two decisions really race in Redis."""
    bots = [start_bot(), start_bot()]
    created = create(redis_url)
    users = [ANN, IVAN]
    prompts = [prompt_for(b, created, u) for b, u in zip(bots, users, strict=True)]

    def send_tap(n: int) -> str:
        prompt = prompts[n]
        data = buttons(prompt)[0]["callback_data"]
        chat_id, message_id = prompt["chat"]["id"], prompt["message_id"]
        sent = sandbox.tap(chat_id, message_id, data, users[n], bots[n].token)
        return str(sent["callback_query_id"])

    with ThreadPoolExecutor(2) as pool:
        query_ids = list(pool.map(send_tap, range(2)))
    outcomes = [answer_and_edit(bots[n], prompts[n], query_ids[n])[1]["text"] for n in range(2)]

    logged_in = ("You are logged in to the website.", "Вы вошли на сайт.")
    winners = [n for n, text in enumerate(outcomes) if text in logged_in]
    assert len(winners) == 1, outcomes
    loser = 1 - winners[0]
    assert ("already approved" if loser == 0 else "уже подтверждён") in outcomes[loser]
    result = poll(redis_url, created)
    assert result.redemption is not None
    assert result.redemption.user["id"] == users[winners[0]]["id"]


def test_login_texts_in_both_languages_fit_a_callback_answer() -> None:
    for name in ("shop.example", ""):
        pairs = [
            (messages.login_prompt("en", name), messages.login_prompt("ru", name)),
            (messages.logged_in("en", name), messages.logged_in("ru", name)),
            (messages.login_denied("en", name), messages.login_denied("ru", name)),
        ]
        if name:
            assert all(name in en and name in ru for en, ru in pairs)
        pairs += [
            (
                messages.login_already_decided("en", True),
                messages.login_already_decided("ru", True),
            ),
            (messages.login_expired("en"), messages.login_expired("ru")),
            (messages.login_private_only("en", "b"), messages.login_private_only("ru", "b")),
            (messages.approve_button("en"), messages.approve_button("ru")),
            (messages.deny_button("en"), messages.deny_button("ru")),
        ]
        for en, ru in pairs:
            assert en != ru and any("а" <= ch <= "я" for ch in ru.lower())
            assert len(en) <= 200 and len(ru) <= 200  # answerCallbackQuery's limit
    assert "already denied" in messages.login_already_decided("en", False)
