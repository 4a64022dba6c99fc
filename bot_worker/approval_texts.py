# ruff: noqa: RUF001 - Russian text is Cyrillic on purpose
"""What a push approval's message says, in English and Russian, and its buttons.

The message names the client and quotes the action text as a blockquote entity: the
text is sent as text with entities, never parsed as markup, so nothing in it can
format, link or pretend to be the bot's own words outside the quote. Buttons carry the
approval's key hash (never its id): `aa:`/`ad:` Approve and Deny, `ap:<n>:` a number
of a numbered approval; `handlers.parse_tap` reads them as it reads a login's.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity

from bot_worker import messages
from bot_worker.handlers import match_choices
from bot_worker.messages import Lang, Reply
from shared.approvals import Decision, Prompt

APPROVE, DENY, PICK = "aa:", "ad:", "ap:"  # + the key hash (32): within Telegram's 64
CALLBACKS = r"^a[adp]:"


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _quoted(head: str, quote: str, tail: str) -> Reply:
    """`head`, then `quote` as a blockquote (its own lines), then `tail`."""
    text = f"{head}\n\n{quote}"
    entity = MessageEntity(
        MessageEntity.BLOCKQUOTE, offset=_utf16(head) + 2, length=_utf16(quote)
    )
    return Reply(text + (f"\n\n{tail}" if tail else ""), (entity,))


def _who(lang: Lang, client: str) -> str:
    if lang == "ru":
        return f"«{client}»" if client else "Сайт"
    return client or "A website"


def prompt_text(lang: Lang, prompt: Prompt) -> Reply:
    who = _who(lang, prompt.client_name)
    if lang == "ru":
        head = f"{who} просит подтвердить действие:"
        tail = (
            f"Выберите число, которое показывает {who}. Если вы ничего не делали сейчас "
            "или не видите числа, нажмите «Отклонить»."
            if prompt.match is not None
            else "Подтверждайте, только если вы сами делаете это прямо сейчас."
        )
    else:
        head = f"{who} asks you to confirm:"
        tail = (
            f"Pick the number {who} shows you. If you are not doing this right now, or "
            "see no number, tap Deny."
            if prompt.match is not None
            else "Approve only if you are doing this yourself right now."
        )
    return _quoted(head, prompt.text, tail)


def outcome_text(lang: Lang, decision: Decision, quote: str) -> Reply:
    """What the message says once tapped: what happened, and the action it was about."""
    who = _who(lang, decision.client_name)
    approved = decision.status == "approved"
    if lang == "ru":
        if decision.outcome == "expired":
            head = "Запрос устарел, ничего не подтверждено:"
        elif decision.outcome == "already":
            done = "подтверждён" if approved else "отклонён"
            head = f"Этот запрос уже {done} — решение принято раньше:"
        elif decision.mismatch:
            head = f"Это не то число, которое показывает {who}, поэтому запрос отклонён:"
        else:
            head = f"Вы {'подтвердили' if approved else 'отклонили'} запрос {who}:"
    elif decision.outcome == "expired":
        head = "This request has expired; nothing was approved:"
    elif decision.outcome == "already":
        head = (f"This request was already {'approved' if approved else 'denied'}; "
                "only the first answer counts:")
    elif decision.mismatch:
        head = f"That was not the number {who} shows, so this was denied:"
    else:
        head = f"You {'approved' if approved else 'denied'} this for {who}:"
    if not quote:
        return Reply(head.rstrip(":") + ".")
    return _quoted(head, quote, "")


def unknown_text(lang: Lang) -> str:
    if lang == "ru":
        return "Этот запрос неизвестен или устарел."
    return "This request is unknown or has expired."


def private_only_text(lang: Lang) -> str:
    if lang == "ru":
        return "Запросы подтверждаются только в личном чате с ботом."
    return "Requests are only approved in your private chat with the bot."


def keyboard(lang: Lang, prompt: Prompt) -> InlineKeyboardMarkup:
    deny = InlineKeyboardButton(messages.deny_button(lang), callback_data=DENY + prompt.key_hash)
    if prompt.match is None:
        approve = InlineKeyboardButton(
            messages.approve_button(lang), callback_data=APPROVE + prompt.key_hash
        )
        return InlineKeyboardMarkup([[approve, deny]])
    numbers = [
        InlineKeyboardButton(str(n), callback_data=f"{PICK}{n}:{prompt.key_hash}")
        for n in match_choices(prompt.match)
    ]
    return InlineKeyboardMarkup([numbers, [deny]])
