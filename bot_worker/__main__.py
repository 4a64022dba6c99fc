"""`python -m bot_worker`: load settings, build the bot, run it until a stop signal."""

from __future__ import annotations

import sys
from typing import NoReturn

from telegram.error import InvalidToken, NetworkError

from bot_worker import logs
from bot_worker.app import build_application, run
from shared.settings import SettingsError, load_settings


def _fail(message: str, status: int) -> NoReturn:
    print(f"bot_worker: {message}", file=sys.stderr)
    raise SystemExit(status)


def main() -> None:
    try:
        settings = load_settings(require_bot_token=True)
    except SettingsError as exc:
        _fail(f"configuration error: {exc}", 2)
    logs.configure(settings.log_level, settings.telegram_bot_token.reveal())
    try:
        run(build_application(settings))
    except InvalidToken:
        _fail("configuration error: TELEGRAM_BOT_TOKEN was rejected by the Bot API", 2)
    except NetworkError as exc:
        reason = str(exc).replace(settings.telegram_bot_token.reveal(), logs.REDACTED)
        _fail(f"cannot reach the Bot API at {settings.telegram_api_base_url}: {reason}", 1)


if __name__ == "__main__":
    main()
