# ruff: noqa: RUF001, RUF002 - Russian text is Cyrillic on purpose
"""Every text a user sees from the bot, in English and Russian.

Russian when the user's `language_code` starts with `ru`, English otherwise.
Texts that need formatting come back as a `Reply`: plain text plus message
entities (offsets in UTF-16 code units, as Telegram counts them), so no
markup escaping is ever involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telegram import MessageEntity

Lang = Literal["en", "ru"]


@dataclass(frozen=True)
class Reply:
    text: str
    entities: tuple[MessageEntity, ...] = field(default=())


def lang_of(language_code: str | None) -> Lang:
    """The reply language for a Telegram user's `language_code`."""
    return "ru" if (language_code or "").lower().startswith("ru") else "en"


def plural_en(n: int, one: str, other: str) -> str:
    return f"{n} {one if n == 1 else other}"


def ru_form(n: int) -> Literal["one", "few", "many"]:
    """Russian plural category: 1, 21 one; 2–4, 22–24 few; 0, 5–20, 25 many."""
    tens, units = n % 100, n % 10
    if units == 1 and tens != 11:
        return "one"
    if 2 <= units <= 4 and not 12 <= tens <= 14:
        return "few"
    return "many"


def plural_ru(n: int, one: str, few: str, many: str) -> str:
    """`n` with the right Russian form: 1 минута, 2 минуты, 5 минут, 21 минута."""
    forms = {"one": one, "few": few, "many": many}
    return f"{n} {forms[ru_form(n)]}"


def minutes(lang: Lang, n: int) -> str:
    """`n` minutes, in the accusative Russian takes after "через" and "действует"."""
    return plural_ru(n, "минуту", "минуты", "минут") if lang == "ru" else plural_en(
        n, "minute", "minutes"
    )


def seconds(lang: Lang, n: int) -> str:
    return plural_ru(n, "секунду", "секунды", "секунд") if lang == "ru" else plural_en(
        n, "second", "seconds"
    )


def duration(lang: Lang, total_seconds: int) -> str:
    """A wait or lifetime as people say it: seconds under a minute, else whole minutes
    rounded up (so the user never comes back too early)."""
    total_seconds = max(1, total_seconds)
    if total_seconds < 60:
        return seconds(lang, total_seconds)
    return minutes(lang, -(-total_seconds // 60))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def code_issued(lang: Lang, code: str, ttl_seconds: int) -> Reply:
    """The code in a monospace entity, how long it lives, and the one rule."""
    if lang == "ru":
        head = "Ваш код для входа: "
        tail = (
            f"\n\nКод действует {duration(lang, ttl_seconds)} и подходит только один раз. "
            "Никому его не сообщайте — даже тому, кто представляется поддержкой."
        )
    else:
        head = "Your login code: "
        tail = (
            f"\n\nIt is valid for {duration(lang, ttl_seconds)} and works only once. "
            "Never share it with anyone — not even someone who claims to be support."
        )
    entity = MessageEntity(MessageEntity.CODE, offset=_utf16_len(head), length=_utf16_len(code))
    return Reply(head + code + tail, (entity,))


def copy_button(lang: Lang) -> str:
    return "Скопировать код" if lang == "ru" else "Copy code"


def rate_limited(lang: Lang, retry_after: int) -> str:
    wait = duration(lang, retry_after)
    if lang == "ru":
        return (
            "Вы запрашиваете коды слишком часто. "
            f"Пожалуйста, попробуйте снова через {wait}."
        )
    return f"You have asked for codes too often. Please try again in {wait}."


def unavailable(lang: Lang) -> str:
    if lang == "ru":
        return "Сервис временно недоступен. Попробуйте ещё раз через минуту."
    return "The service is temporarily unavailable. Please try again in a minute."


def unknown_login_link(lang: Lang) -> str:
    if lang == "ru":
        return (
            "Эта ссылка для входа неизвестна или устарела. "
            "Вернитесь на сайт и начните вход заново, или получите код командой /code."
        )
    return (
        "This login link is unknown or has expired. "
        "Go back to the website and start the login again, or get a code with /code."
    )


# -- deep-link login ------------------------------------------------------------------
# `client` is the API client's name from API_KEYS; "" when the API is open, and
# then the texts name no one ("a website", "сайт").


def login_prompt(lang: Lang, client: str) -> str:
    if lang == "ru":
        where = f"в «{client}»" if client else "на сайт"
        return (
            f"Войти {where}?\n\n"
            "Подтверждайте, только если вы сами только что начали вход. "
            "Вход выполняется от имени вашего аккаунта Telegram."
        )
    return (
        f"Log in to {client or 'a website'}?\n\n"
        "Approve only if you started this login yourself just now. "
        "You will be logged in with your Telegram account."
    )


def approve_button(lang: Lang) -> str:
    return "Подтвердить" if lang == "ru" else "Approve"


def deny_button(lang: Lang) -> str:
    return "Отклонить" if lang == "ru" else "Deny"


def _at(lang: Lang, host: str) -> str:
    """The site's host after the client's name, when the request names one."""
    if not host:
        return ""
    return f" на {host}" if lang == "ru" else f" at {host}"


def logged_in(lang: Lang, client: str, host: str = "") -> str:
    if lang == "ru":
        return f"Вы вошли в «{client}»{_at(lang, host)}." if client else "Вы вошли на сайт."
    return f"You are logged in to {client or 'the website'}{_at(lang, host)}."


def login_denied(lang: Lang, client: str, host: str = "") -> str:
    if lang == "ru":
        if client:
            return f"Вход в «{client}»{_at(lang, host)} отклонён."
        return "Вход на сайт отклонён."
    return f"Login to {client or 'the website'}{_at(lang, host)} denied."


# -- OpenID Connect authorization: number matching ------------------------------------
# The authorization page shows a number; the bot offers three and approves only on the
# right one. A phishing page that relays our link cannot show the user our number, so a
# user who picks by guess (or denies) stops it.


def authorization_prompt(lang: Lang, client: str, host: str) -> str:
    if lang == "ru":
        return (
            f"Войти в «{client}» на {host}?\n\n"
            "Выберите число, которое показано на странице входа. "
            "Если вы не начинали вход только что или не видите числа, нажмите «Отклонить»."
        )
    return (
        f"Log in to {client} at {host}?\n\n"
        "Pick the number shown on the login page. "
        "If you did not start a login just now, or see no number, tap Deny."
    )


def login_mismatch(lang: Lang) -> str:
    if lang == "ru":
        return (
            "Это не то число, что было на странице, поэтому вход отклонён. "
            "Если вы входили сами, начните вход на сайте заново."
        )
    return (
        "That was not the number on the page, so the login was denied. "
        "If you were logging in, start again on the site."
    )


def login_already_decided(lang: Lang, approved: bool) -> str:
    if lang == "ru":
        done = "подтверждён" if approved else "отклонён"
        return f"Этот запрос на вход уже {done} — решение принято раньше."
    done = "approved" if approved else "denied"
    return f"This login request was already {done}; only the first answer counts."


def login_expired(lang: Lang) -> str:
    if lang == "ru":
        return "Запрос на вход устарел. Вернитесь на сайт и начните вход заново."
    return "This login request has expired. Go back to the website and start again."


def login_private_only(lang: Lang, username: str) -> str:
    if lang == "ru":
        return (
            "Вход по ссылке подтверждается только в личном чате. "
            f"Откройте чат с @{username} и перейдите по ссылке ещё раз."
        )
    return (
        "Logins by link are only approved in a private chat. "
        f"Open a chat with @{username} and follow the link again."
    )


def private_only(lang: Lang, username: str) -> str:
    if lang == "ru":
        return (
            "Коды для входа выдаются только в личном чате. "
            f"Откройте чат с @{username} и отправьте /code."
        )
    return (
        "Login codes are only given in a private chat. "
        f"Open a chat with @{username} and send /code."
    )


def open_private_chat_button(lang: Lang) -> str:
    return "Открыть личный чат" if lang == "ru" else "Open private chat"


def logged_out(lang: Lang, count: int) -> str:
    if count == 0:
        if lang == "ru":
            return "У вас не было активных сеансов."
        return "You had no active sessions."
    if lang == "ru":
        verb = "Завершён" if ru_form(count) == "one" else "Завершено"
        return f"{verb} {plural_ru(count, 'сеанс', 'сеанса', 'сеансов')}. Все ваши входы отозваны."
    ended = plural_en(count, "session", "sessions")
    return f"{ended} ended. You are logged out everywhere."


def help_text(lang: Lang, ttl_seconds: int) -> str:
    valid = duration(lang, ttl_seconds)
    if lang == "ru":
        return (
            "Этот бот помогает входить на сайты и в приложения через Telegram.\n\n"
            "/code — получить код для входа. Введите его на сайте, который его просит. "
            f"Код действует {valid} и подходит только один раз; новый код отменяет "
            "предыдущий.\n"
            "/logout — выйти везде: завершить все сеансы, открытые с помощью кодов.\n"
            "/sessions — ваши сеансы: где, с какого времени, когда использованы; "
            "любой можно завершить.\n"
            "/help — эта справка.\n\n"
            "Вход по ссылке: если сайт предлагает кнопку «Войти через Telegram», она "
            "откроет этот чат — просто подтвердите вход, ничего вводить не нужно.\n\n"
            "Никогда никому не сообщайте код: кто его знает, тот может войти от вашего имени."
        )
    return (
        "This bot lets you log in to websites and apps with your Telegram account.\n\n"
        "/code — get a login code. Type it on the site that asks for it. "
        f"A code is valid for {valid} and works only once; a new code cancels the "
        "previous one.\n"
        "/logout — log out everywhere: end every session opened with your codes.\n"
        "/sessions — your sessions: where, since when, last used; end any of them.\n"
        "/help — this help.\n\n"
        "Login by link: when a site offers a \"Log in with Telegram\" button, it opens "
        "this chat — just approve the login, nothing to type.\n\n"
        "Never share a code with anyone: whoever has it can log in as you."
    )


def text_hint(lang: Lang) -> str:
    if lang == "ru":
        return "Чтобы получить код для входа, отправьте /code. Справка — /help."
    return "To get a login code, send /code. For help, send /help."


def commands(lang: Lang) -> list[tuple[str, str]]:
    """The command menu (setMyCommands) for a language."""
    if lang == "ru":
        return [
            ("code", "Получить код для входа"),
            ("logout", "Выйти на всех сайтах"),
            ("sessions", "Активные сеансы"),
            ("help", "Как это работает"),
        ]
    return [
        ("code", "Get a login code"),
        ("logout", "Log out everywhere"),
        ("sessions", "Active sessions"),
        ("help", "How it works"),
    ]
