"""`python -m bot_worker [--fd N]`: load settings, build the bot, run it until a stop signal.

In webhook mode `--fd 0` serves on a listening socket inherited as file
descriptor 0, as supervisord's `fcgi-program` hands it to every bot process
sharing one port; without it the bot listens on BOT_HOST:BOT_PORT.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from telegram.error import InvalidToken, NetworkError

from bot_worker import logs
from bot_worker.app import build_application, run
from bot_worker.webhook import ListenError
from shared.settings import SettingsError, load_settings


def _fail(message: str, status: int) -> NoReturn:
    print(f"bot_worker: {message}", file=sys.stderr)
    raise SystemExit(status)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot_worker", description=__doc__)
    parser.add_argument(
        "--fd", type=int, default=None, metavar="N",
        help="webhook mode: serve on the already listening socket at file descriptor N "
        "(supervisord fcgi-program: --fd 0) instead of BOT_HOST:BOT_PORT",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    try:
        settings = load_settings(require_bot_token=True)
    except SettingsError as exc:
        _fail(f"configuration error: {exc}", 2)
    logs.configure(settings.log_level, settings.telegram_bot_token.reveal())
    try:
        run(build_application(settings), fd=args.fd)
    except ListenError as exc:
        _fail(str(exc), 1)
    except InvalidToken:
        _fail("configuration error: TELEGRAM_BOT_TOKEN was rejected by the Bot API", 2)
    except NetworkError as exc:
        reason = str(exc).replace(settings.telegram_bot_token.reveal(), logs.REDACTED)
        _fail(f"cannot reach the Bot API at {settings.telegram_api_base_url}: {reason}", 1)


if __name__ == "__main__":
    main()
