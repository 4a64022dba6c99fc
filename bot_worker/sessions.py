# ruff: noqa: RUF001, RUF002 - Russian text is Cyrillic; the page buttons are angle quotes
"""`/sessions`: the user's live sessions, each with an End button, and its texts.

One message lists them, newest first, PAGE_SIZE a page with ‹ › buttons: the client's
name, when the session began, when it was last used and the network it came from
(`shared.sessions.Sessions.listed`). End ends that session at once
(`Sessions.end`: its token fails from then on, an OpenID Connect session's refresh
token too) and the list is edited in place. Buttons carry a page number and a token
id, never a token: "sp:<page>" turns the page, "se:<page>:<token id>" ends one.
Times are UTC (Telegram tells a bot no user's time zone).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot_worker import messages
from bot_worker.handlers import STORE
from bot_worker.messages import Lang
from shared.sessions import client_name
from shared.settings import Settings
from shared.store import Store, Unavailable
from shared.tokens import Listed

logger = logging.getLogger(__name__)

PAGE_SIZE = 5
PAGE, END = "sp:", "se:"
SESSIONS_CALLBACKS = r"^s[pe]:"
_PAGE = re.compile(r"sp:([0-9]{1,3})")
_END = re.compile(r"se:([0-9]{1,3}):([0-9a-f]{16})")
_MONTHS_RU = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
              "сентября", "октября", "ноября", "декабря")


def _store(context: ContextTypes.DEFAULT_TYPE) -> Store:
    store: Store = context.bot_data[STORE]
    return store


# -- texts ----------------------------------------------------------------------------------


def _date(lang: Lang, when: int) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    if lang == "ru":
        return f"{moment.day} {_MONTHS_RU[moment.month - 1]} {moment.year}, {moment:%H:%M} UTC"
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _ago(lang: Lang, when: int, now: int) -> str:
    """When a session was last used: relative within a day, else the date."""
    minutes = max(0, now - when) // 60
    if minutes < 1:
        return "только что" if lang == "ru" else "just now"
    if minutes < 60:
        return f"{messages.minutes(lang, minutes)} назад" if lang == "ru" else (
            f"{messages.plural_en(minutes, 'minute', 'minutes')} ago")
    hours = minutes // 60
    if hours < 24:
        if lang == "ru":
            return f"{messages.plural_ru(hours, 'час', 'часа', 'часов')} назад"
        return f"{messages.plural_en(hours, 'hour', 'hours')} ago"
    return _date(lang, when)


def _entry(lang: Lang, number: int, session: Listed, name: str, now: int) -> str:
    who = name or ("сайт без ключа API" if lang == "ru" else "a website without an API key")
    lines = [f"{number}. {who}"]
    if session.began is not None:
        began = _date(lang, session.began)
        lines.append(f"   с {began}" if lang == "ru" else f"   since {began}")
    if session.last_used is not None:
        used = _ago(lang, session.last_used, now)
        lines.append(f"   использован: {used}" if lang == "ru" else f"   last used {used}")
    if session.network:
        lines.append(f"   из сети {session.network}" if lang == "ru"
                     else f"   from {session.network}")
    return "\n".join(lines)


def no_sessions(lang: Lang) -> str:
    return "Активных сеансов нет." if lang == "ru" else "No active sessions."


def _heading(lang: Lang, count: int, page: int, pages: int) -> str:
    if lang == "ru":
        head = f"Активные сеансы: {count}."
        if pages > 1:
            head += f" Страница {page + 1} из {pages}."
        return head + " «Завершить» выходит из сеанса на том сайте сразу."
    head = f"Active sessions: {count}."
    if pages > 1:
        head += f" Page {page + 1} of {pages}."
    return head + " End logs that session out at once."


def end_button(lang: Lang, number: int) -> str:
    return f"Завершить {number}" if lang == "ru" else f"End {number}"


def ended(lang: Lang, name: str) -> str:
    if lang == "ru":
        return f"Сеанс «{name}» завершён." if name else "Сеанс завершён."
    return f"Session with {name} ended." if name else "Session ended."


def already_ended(lang: Lang) -> str:
    if lang == "ru":
        return "Этот сеанс уже завершён."
    return "This session has already ended."


# -- the list -------------------------------------------------------------------------------


def render(
    lang: Lang, settings: Settings, sessions: list[Listed], page: int, now: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The list's text and buttons at `page` (clamped to the last one)."""
    if not sessions:
        return no_sessions(lang), None
    pages = -(-len(sessions) // PAGE_SIZE)
    page = min(max(page, 0), pages - 1)
    first = page * PAGE_SIZE
    shown = sessions[first: first + PAGE_SIZE]
    entries, rows = [], []
    for number, session in enumerate(shown, start=first + 1):
        name = client_name(settings, session.client, oidc=bool(session.family))
        entries.append(_entry(lang, number, session, name, now))
        label = end_button(lang, number) + (f" · {name}" if name else "")
        rows.append([InlineKeyboardButton(
            label[:64], callback_data=f"{END}{page}:{session.token_id}")])
    turns = []
    if page > 0:
        turns.append(InlineKeyboardButton("‹", callback_data=f"{PAGE}{page - 1}"))
    if page < pages - 1:
        turns.append(InlineKeyboardButton("›", callback_data=f"{PAGE}{page + 1}"))
    if turns:
        rows.append(turns)
    text = _heading(lang, len(sessions), page, pages) + "\n\n" + "\n\n".join(entries)
    return text, InlineKeyboardMarkup(rows)


async def list_sessions(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/sessions` in a private chat: the first page of the user's live sessions."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.chat.type != "private":
        return
    lang = messages.lang_of(user.language_code)
    store = _store(context)
    try:
        listed = await store.sessions.listed(user.id)
    except Unavailable as exc:
        logger.warning("cannot list user %d's sessions, Redis is unavailable: %s", user.id, exc)
        await message.reply_text(messages.unavailable(lang))
        return
    text, keyboard = render(lang, store.settings, listed, 0, int(time.time()))
    await message.reply_text(text, reply_markup=keyboard)


async def session_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """‹ › turn the list's page; End ends that session and shows the list without it."""
    query: CallbackQuery | None = update.callback_query
    if query is None or query.data is None:
        return
    user = query.from_user
    lang = messages.lang_of(user.language_code)
    if query.message is None or query.message.chat.type != "private":
        await query.answer()
        return
    store = _store(context)
    turn, end = _PAGE.fullmatch(query.data), _END.fullmatch(query.data)
    if turn is None and end is None:  # not a button the bot made
        await query.answer()
        return
    answer = ""
    try:
        if end is not None:
            page = int(end[1])
            done = await store.sessions.end(user.id, end[2])
            if done is None:
                answer = already_ended(lang)
            else:
                # session.ended: emitted by token_end.lua's step (see shared.sessions.Ended)
                answer = ended(lang, client_name(
                    store.settings, done.session.client, oidc=bool(done.session.family)))
                logger.info("user %d ended a session from the bot", user.id)
        else:
            assert turn is not None
            page = int(turn[1])
        listed = await store.sessions.listed(user.id)
    except Unavailable as exc:
        logger.warning("cannot change user %d's sessions, Redis is unavailable: %s",
                       user.id, exc)
        await query.answer(messages.unavailable(lang), show_alert=True)
        return
    text, keyboard = render(lang, store.settings, listed, page, int(time.time()))
    # the list first, then the answer: when the button stops spinning the list is current
    try:
        await query.edit_message_text(text, reply_markup=keyboard)
    except BadRequest as exc:  # nothing changed (a redelivered tap, the same page)
        if "not modified" not in str(exc).lower():
            raise
    try:
        await query.answer(answer[:200])
    except BadRequest as exc:  # a tap handled again: answered the first time
        logger.info("callback query already answered: %s", exc)
