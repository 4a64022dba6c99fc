# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""The OpenID Connect authorization page's words, in English and Russian. `$name` marks
a value put in (string.Template); the page escapes every text it shows."""

from __future__ import annotations

from typing import Literal

Lang = Literal["en", "ru"]

TEXTS: dict[Lang, dict[str, str]] = {
    "en": {
        "title": "Log in to $client",
        "lead": "$client ($host) asks who you are. Confirm it with Telegram.",
        "number": "Your number",
        "number_hint": "Telegram will ask you to pick this number. "
        "If it asks for another one, deny: someone else started that login.",
        "open": "Open Telegram",
        "sandbox": "Open the chat in the local Telegram sandbox",
        "qr": "Or scan this with your phone's camera.",
        "command": "Or send this command to @$bot:",
        "copy": "Copy",
        "copied": "Copied",
        "code_label": "Have a code from the bot's /code? Type it here:",
        "code_submit": "Log in",
        "waiting": "Waiting for your answer in Telegram…",
        "redirecting": "Done. Taking you back to $client…",
        "expired": "This login page has expired.",
        "again": "Start again",
        "offline": "Cannot reach the server; trying again…",
        "invalid_code": "That code did not work: it may be mistyped, expired or already "
        "used. Ask the bot for a new one with /code.",
        "rate_limited": "Too many wrong codes from your network. Try again in $seconds s.",
        "unavailable": "Logging in is temporarily unavailable. Please try again shortly.",
        "valid": "This page works for $minutes minutes.",
        "error_title": "This login cannot go on",
        "noscript": "This page needs JavaScript to follow your answer in Telegram.",
    },
    "ru": {
        "title": "Вход в $client",
        "lead": "$client ($host) хочет узнать, кто вы. Подтвердите это в Telegram.",
        "number": "Ваше число",
        "number_hint": "Telegram попросит выбрать это число. "
        "Если он предложит другое — отклоните: этот вход начал кто-то другой.",
        "open": "Открыть Telegram",
        "sandbox": "Открыть чат в локальной песочнице Telegram",
        "qr": "Или отсканируйте код камерой телефона.",
        "command": "Или отправьте эту команду боту @$bot:",
        "copy": "Скопировать",
        "copied": "Скопировано",
        "code_label": "Есть код от команды /code? Введите его здесь:",
        "code_submit": "Войти",
        "waiting": "Ждём вашего ответа в Telegram…",
        "redirecting": "Готово. Возвращаем вас в $client…",
        "expired": "Срок действия этой страницы входа истёк.",
        "again": "Начать заново",
        "offline": "Нет связи с сервером; пробуем ещё раз…",
        "invalid_code": "Код не подошёл: возможно, он набран с ошибкой, истёк или уже "
        "использован. Получите новый командой /code.",
        "rate_limited": "Слишком много неверных кодов из вашей сети. Повторите через "
        "$seconds с.",
        "unavailable": "Вход временно недоступен. Попробуйте чуть позже.",
        "valid": "Эта страница действует $minutes мин.",
        "error_title": "Продолжить вход нельзя",
        "noscript": "Чтобы дождаться ответа из Telegram, этой странице нужен JavaScript.",
    },
}
