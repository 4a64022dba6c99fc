"""The bot worker as a real process, talking to the Telegram sandbox and a real Redis."""

from __future__ import annotations

import re
import time
from typing import Any

from bot_worker import messages
from shared import keys
from shared.settings import Settings, load_settings
from shared.store import Redemption
from tests.fixtures.bot import (
    ANN,
    AUTH_SECRET,
    IVAN,
    NOLANG,
    BotProcess,
    BotStarter,
    Message,
    buttons,
    code_of,
)
from tests.fixtures.codes import code_is_live as stored_code_is_live
from tests.fixtures.redis import RedisServer
from tests.fixtures.store import run_on_store

GROUP: Message = {"id": -1001234567890, "type": "supergroup", "title": "Friends"}
CHANNEL: Message = {"id": -1009876543210, "type": "channel", "title": "News"}


def settings_for(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url, **env}, env_file="/nonexistent"
    )


def redeem(redis_url: str, code: str, address: str = "127.0.0.1") -> Redemption:
    return run_on_store(settings_for(redis_url), lambda store: store.redeem_code(code, address))


def token_user(redis_url: str, token: str) -> dict[str, Any] | None:
    return run_on_store(settings_for(redis_url), lambda store: store.token_user(token))


def code_is_live(redis_server: RedisServer, code: str) -> bool:
    """The code's key names a user whose current code it is (a replaced code's key is
    inert: it no longer redeems)."""
    with redis_server.client() as client:
        return stored_code_is_live(client, AUTH_SECRET, code)


# -- codes -------------------------------------------------------------------------------------


def test_start_and_code_issue_a_live_code_voiding_the_previous(
    bot: BotProcess, redis_server: RedisServer
) -> None:
    first = bot.ask("/start", ANN)
    code = code_of(first)
    assert re.fullmatch(r"\d{8}", code)
    assert "Your login code" in first["text"]
    assert "5 minutes" in first["text"]
    (copy,) = buttons(first)
    assert copy["copy_text"] == {"text": code}
    assert code_is_live(redis_server, code)

    second = bot.ask("/code", ANN)
    new_code = code_of(second)
    assert re.fullmatch(r"\d{8}", new_code)
    assert new_code != code
    assert not code_is_live(redis_server, code), "the previous code must be void at once"
    assert code_is_live(redis_server, new_code)

    redemption = redeem(redis_server.url, new_code)
    assert redemption.user["id"] == ANN["id"]
    assert redemption.user["username"] == "ann"
    assert redemption.user["language_code"] == "en"


def test_code_length_follows_the_setting(
    start_bot: BotStarter, redis_server: RedisServer
) -> None:
    bot = start_bot(CODE_LENGTH="11", CODE_TTL_SECONDS="90")
    reply = bot.ask("/code", ANN)
    assert re.fullmatch(r"\d{11}", code_of(reply))
    assert "2 minutes" in reply["text"]


def test_russian_and_english_replies(bot: BotProcess) -> None:
    ru = bot.ask("/code", IVAN)
    assert "Ваш код для входа" in ru["text"]
    assert "5 минут" in ru["text"]
    assert buttons(ru)[0]["text"] == "Скопировать код"
    en = bot.ask("/code", NOLANG)
    assert "Your login code" in en["text"]
    assert buttons(en)[0]["text"] == "Copy code"


def test_code_reply_is_the_message_reply_text_sent(bot: BotProcess) -> None:
    """The code's reply goes out as plain JSON (handlers._send_code): the same text, code
    entity and copy button `Message.reply_text` sent, no quote of the user's message, and
    one sendMessage to that chat."""
    for user, head, button in (
        (ANN, "Your login code: ", "Copy code"),
        (IVAN, "Ваш код для входа: ", "Скопировать код"),
    ):
        since = time.time()
        reply = bot.ask("/code", user)
        code = code_of(reply)
        lang = messages.lang_of(str(user.get("language_code")))
        assert reply["text"] == messages.code_issued(lang, code, 300).text
        assert reply["entities"] == [{"type": "code", "offset": len(head), "length": len(code)}]
        assert reply["reply_markup"] == {
            "inline_keyboard": [[{"text": button, "copy_text": {"text": code}}]]
        }
        assert "reply_to_message" not in reply
        sent = bot.sandbox.calls(bot.token, "sendMessage", since=since)
        assert [c["status"] for c in sent if c["chat_id"] == user["id"]] == [200]


def test_issue_limit_refuses_with_the_wait_and_no_code(
    bot: BotProcess, redis_server: RedisServer
) -> None:
    codes = [code_of(bot.ask("/code", ANN)) for _ in range(5)]
    refusal = bot.ask("/code", ANN)
    assert "too often" in refusal["text"]
    assert "try again in 10 minutes" in refusal["text"]
    assert not [e for e in refusal.get("entities", []) if e["type"] == "code"]
    assert not re.search(r"\d{8}", refusal["text"])
    assert not buttons(refusal)
    assert code_is_live(redis_server, codes[-1]), "a refusal leaves the last code alone"
    # Russian refusal, same limit for another user
    for _ in range(5):
        code_of(bot.ask("/code", IVAN))
    assert "через 10 минут" in bot.ask("/code", IVAN)["text"]


def test_deep_link_payload_is_unknown_and_issues_nothing(
    bot: BotProcess, redis_server: RedisServer
) -> None:
    reply = bot.ask("/start abcdefABCDEF0123456789", ANN)
    assert "unknown or has expired" in reply["text"]
    assert not re.search(r"\d{8}", reply["text"])
    with redis_server.client() as client:
        assert not list(client.scan_iter(match=keys.CODE + "*"))
    assert "неизвестна или устарела" in bot.ask("/start zzz", IVAN)["text"]


def test_plain_text_gets_a_hint(bot: BotProcess) -> None:
    assert "/code" in bot.ask("hello there", ANN)["text"]
    assert "отправьте /code" in bot.ask("привет", IVAN)["text"]


# -- groups -----------------------------------------------------------------------------------


def test_group_commands_get_a_hint_and_never_a_code(
    bot: BotProcess, redis_server: RedisServer
) -> None:
    username = bot.username()
    replies = [
        bot.ask(text, ANN, chat=GROUP)
        for text in ("/code", "/start", f"/code@{username}", "/logout", "/help")
    ]
    for reply in replies:
        assert "private chat" in reply["text"]
        assert f"@{username}" in reply["text"]
        assert buttons(reply)[0]["url"] == f"https://t.me/{username}"
    assert "личном чате" in bot.ask("/code", IVAN, chat=GROUP)["text"]
    everything = bot.messages(GROUP["id"])
    bot_texts = [m["text"] for m in everything if m.get("from_bot")]
    assert len(bot_texts) == 6
    # the sandbox's usernames hold digits (sandbox<id>_bot); nothing else may
    assert not any(re.search(r"\d{8}", text.replace(username, "")) for text in bot_texts)
    with redis_server.client() as client:
        assert not list(client.scan_iter(match=keys.CODE + "*"))


def test_channel_post_command_gets_a_hint(bot: BotProcess, redis_server: RedisServer) -> None:
    reply = bot.ask("/code", ANN, chat=CHANNEL)
    assert "private chat" in reply["text"]
    assert not re.search(r"\d{8}", reply["text"].replace(bot.username(), ""))
    with redis_server.client() as client:
        assert not list(client.scan_iter(match=keys.CODE + "*"))


# -- logout and help --------------------------------------------------------------------------


def test_logout_ends_every_session_and_says_how_many(
    bot: BotProcess, redis_server: RedisServer
) -> None:
    tokens = []
    for _ in range(2):
        code = code_of(bot.ask("/code", ANN))
        tokens.append(redeem(redis_server.url, code).access_token)
    assert all(token_user(redis_server.url, token) for token in tokens)

    reply = bot.ask("/logout", ANN)
    assert "2 sessions ended" in reply["text"]
    for token in tokens:
        assert token_user(redis_server.url, token) is None
    assert "You had no active sessions" in bot.ask("/logout", ANN)["text"]

    code = code_of(bot.ask("/code", IVAN))
    redeem(redis_server.url, code)
    assert "Завершён 1 сеанс" in bot.ask("/logout", IVAN)["text"]


def test_help_in_both_languages(bot: BotProcess) -> None:
    en = bot.ask("/help", ANN)["text"]
    for word in ("/code", "/logout", "5 minutes", "only once", "Never share"):
        assert word in en
    ru = bot.ask("/help", IVAN)["text"]
    for word in ("/code", "/logout", "5 минут", "один раз", "Никогда никому"):
        assert word in ru
