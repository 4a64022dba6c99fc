"""Callback answers fit Telegram's 200 characters whatever the client's name."""

from __future__ import annotations

from bot_worker import messages
from bot_worker.handlers import CALLBACK_ANSWER_MAX, _short


def test_a_long_client_name_is_cut_to_fit() -> None:
    for lang in ("en", "ru"):
        text = messages.login_denied(lang, "shop " * 100)
        answer = _short(text)
        assert len(text) > CALLBACK_ANSWER_MAX >= len(answer)
        assert answer.endswith("…") and text.startswith(answer[:-1])
    assert _short("Done.") == "Done."
