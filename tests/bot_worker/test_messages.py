# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""bot_worker.messages: languages, plural forms, the code entity."""

from __future__ import annotations

import pytest
from telegram import MessageEntity

from bot_worker import messages


@pytest.mark.parametrize(
    ("language_code", "lang"),
    [("ru", "ru"), ("ru-RU", "ru"), ("RU", "ru"), ("en", "en"), ("uk", "en"), (None, "en"),
     ("", "en"), ("de", "en")],
)
def test_lang_of(language_code: str | None, lang: str) -> None:
    assert messages.lang_of(language_code) == lang


@pytest.mark.parametrize(
    ("n", "form"),
    [(0, "many"), (1, "one"), (2, "few"), (4, "few"), (5, "many"), (11, "many"), (12, "many"),
     (14, "many"), (20, "many"), (21, "one"), (22, "few"), (25, "many"), (101, "one"),
     (111, "many"), (112, "many"), (122, "few")],
)
def test_russian_plural_category(n: int, form: str) -> None:
    assert messages.ru_form(n) == form


def test_minutes_in_both_languages() -> None:
    assert messages.minutes("en", 1) == "1 minute"
    assert messages.minutes("en", 5) == "5 minutes"
    assert messages.minutes("ru", 1) == "1 минуту"
    assert messages.minutes("ru", 3) == "3 минуты"
    assert messages.minutes("ru", 5) == "5 минут"
    assert messages.minutes("ru", 21) == "21 минуту"


@pytest.mark.parametrize(
    ("seconds", "en", "ru"),
    [(1, "1 second", "1 секунду"), (0, "1 second", "1 секунду"), (42, "42 seconds", "42 секунды"),
     (59, "59 seconds", "59 секунд"), (60, "1 minute", "1 минуту"), (61, "2 minutes", "2 минуты"),
     (300, "5 minutes", "5 минут"), (599, "10 minutes", "10 минут")],
)
def test_duration_rounds_up_to_whole_minutes(seconds: int, en: str, ru: str) -> None:
    assert messages.duration("en", seconds) == en
    assert messages.duration("ru", seconds) == ru


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_code_entity_covers_exactly_the_code(lang: messages.Lang) -> None:
    reply = messages.code_issued(lang, "01234567", 300)
    (entity,) = reply.entities
    assert entity.type == MessageEntity.CODE
    assert reply.text[entity.offset : entity.offset + entity.length] == "01234567"
    assert ("5 minutes" if lang == "en" else "5 минут") in reply.text


def test_code_entity_offset_counts_utf16_units() -> None:
    # Cyrillic is one UTF-16 unit a letter, so offsets equal str indexes here;
    # the entity must still be computed in UTF-16 units, as Telegram counts.
    reply = messages.code_issued("ru", "123456", 60)
    (entity,) = reply.entities
    prefix = reply.text[: entity.offset]
    assert len(prefix.encode("utf-16-le")) // 2 == entity.offset
    assert "1 минуту" in reply.text


@pytest.mark.parametrize(
    ("count", "en", "ru"),
    [(0, "You had no active sessions", "У вас не было активных сеансов"),
     (1, "1 session ended", "Завершён 1 сеанс"),
     (2, "2 sessions ended", "Завершено 2 сеанса"),
     (5, "5 sessions ended", "Завершено 5 сеансов"),
     (21, "21 sessions ended", "Завершён 21 сеанс"),
     (23, "23 sessions ended", "Завершено 23 сеанса")],
)
def test_logged_out_counts(count: int, en: str, ru: str) -> None:
    assert en in messages.logged_out("en", count)
    assert ru in messages.logged_out("ru", count)


def test_rate_limited_states_the_wait() -> None:
    assert "try again in 3 minutes" in messages.rate_limited("en", 150)
    assert "через 3 минуты" in messages.rate_limited("ru", 150)
    assert "try again in 40 seconds" in messages.rate_limited("en", 40)


def test_help_mentions_every_command_and_validity() -> None:
    for lang in ("en", "ru"):
        text = messages.help_text(lang, 300)
        for command in ("/code", "/logout", "/help"):
            assert command in text
        assert messages.duration(lang, 300) in text
    assert "only once" in messages.help_text("en", 300)
    assert "Never share" in messages.help_text("en", 300)


def test_every_text_differs_between_languages() -> None:
    pairs = [
        (messages.unavailable("en"), messages.unavailable("ru")),
        (messages.unknown_login_link("en"), messages.unknown_login_link("ru")),
        (messages.private_only("en", "b"), messages.private_only("ru", "b")),
        (messages.text_hint("en"), messages.text_hint("ru")),
        (messages.copy_button("en"), messages.copy_button("ru")),
        (messages.open_private_chat_button("en"), messages.open_private_chat_button("ru")),
    ]
    for en, ru in pairs:
        assert en != ru
        assert any("а" <= ch <= "я" for ch in ru.lower())
    assert "@b" in messages.private_only("en", "b")


def test_command_menus_name_the_same_commands() -> None:
    en = [name for name, _ in messages.commands("en")]
    ru = [name for name, _ in messages.commands("ru")]
    assert en == ru == ["code", "logout", "sessions", "help"]


def test_number_matching_texts() -> None:
    for lang in ("en", "ru"):
        prompt = messages.authorization_prompt(lang, "Shop", "shop.example")
        assert "Shop" in prompt and "shop.example" in prompt
        assert messages.deny_button(lang) in prompt  # it names the button to tap
        for text in (prompt, messages.login_mismatch(lang)):
            assert len(text) <= 200  # answerCallbackQuery's limit
    assert messages.authorization_prompt("en", "Shop", "shop.example").startswith(
        "Log in to Shop at shop.example?"
    )
    assert messages.authorization_prompt("ru", "Shop", "shop.example").startswith(
        "Войти в «Shop» на shop.example?"
    )
    assert messages.login_mismatch("en").startswith("That was not the number on the page")
    assert "отклонён" in messages.login_mismatch("ru")


@pytest.mark.parametrize(
    ("host", "texts"),
    [("", ("You are logged in to Shop.", "Вы вошли в «Shop».",
           "Login to Shop denied.", "Вход в «Shop» отклонён.")),
     ("shop.example", ("You are logged in to Shop at shop.example.",
                       "Вы вошли в «Shop» на shop.example.",
                       "Login to Shop at shop.example denied.",
                       "Вход в «Shop» на shop.example отклонён."))],
)
def test_outcomes_name_the_host_when_there_is_one(
    host: str, texts: tuple[str, str, str, str]
) -> None:
    assert (
        messages.logged_in("en", "Shop", host), messages.logged_in("ru", "Shop", host),
        messages.login_denied("en", "Shop", host), messages.login_denied("ru", "Shop", host),
    ) == texts
