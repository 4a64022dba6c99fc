"""Validation of reply_markup as Telegram does it: inline keyboards above all."""

from __future__ import annotations

from typing import Any

from sandbox.telegram.errors import bad_request

# the optional fields of an InlineKeyboardButton; exactly one must be used
_INLINE_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
)
_MAX_BUTTONS = 100


def validate(markup: Any, *, inline_only: bool = False) -> dict[str, Any] | None:
    """The markup to store, or None; raises 400 the way Telegram would."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        _validate_inline(markup["inline_keyboard"])
        return markup
    if inline_only:
        raise bad_request("inline keyboard expected")
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                text = button.get("text") if isinstance(button, dict) else button
                if not isinstance(text, str) or not text:
                    raise bad_request("BUTTON_TEXT_INVALID")
        return markup
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return markup
    raise bad_request("can't parse reply keyboard markup JSON object")


def _validate_inline(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request("can't parse inline keyboard markup JSON object")
    if sum(len(row) for row in rows) > _MAX_BUTTONS:
        raise bad_request("reply markup is too long")
    for row in rows:
        for button in row:
            _validate_button(button)


def _validate_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise bad_request("can't parse inline keyboard button: InlineKeyboardButton expected")
    text = button.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("can't parse inline keyboard button: Text buttons are unallowed")
    actions = [name for name in _INLINE_ACTIONS if button.get(name) is not None]
    if not actions:
        raise bad_request("can't parse inline keyboard button: Text buttons are unallowed "
                          "in the inline keyboard")
    if len(actions) > 1:
        raise bad_request("can't parse inline keyboard button: only one of the optional "
                          f"fields may be used, got {', '.join(actions)}")
    action = actions[0]
    value = button[action]
    if action == "callback_data":
        if not isinstance(value, str) or not 1 <= len(value.encode()) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    elif action == "url":
        if not isinstance(value, str) or not value.startswith(("http://", "https://", "tg://")):
            raise bad_request("BUTTON_URL_INVALID")
    elif action == "copy_text":
        copied = value.get("text") if isinstance(value, dict) else None
        if not isinstance(copied, str) or not 1 <= len(copied) <= 256:
            raise bad_request("can't parse inline keyboard button: copy_text must have "
                              "text of 1-256 characters")


def callback_data(markup: dict[str, Any] | None) -> set[str]:
    """All callback_data values of an inline keyboard."""
    if not markup or "inline_keyboard" not in markup:
        return set()
    return {
        button["callback_data"]
        for row in markup["inline_keyboard"]
        for button in row
        if isinstance(button, dict) and isinstance(button.get("callback_data"), str)
    }
