"""`python -m sandbox.telegram --port N`: run the Telegram Bot API sandbox on 127.0.0.1.

Flood limits (flood.py) default to Telegram's: `--send-rate 30` messages a second
per bot, `--chat-burst 3` per chat in any `--chat-window 3` seconds; env
SANDBOX_SEND_RATE, SANDBOX_CHAT_BURST, SANDBOX_CHAT_WINDOW when no flag is given;
0 turns a limit off. A reset (POST /control/reset) restores these.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from sandbox.telegram.app import create_app
from sandbox.telegram.flood import Limits

GRACEFUL_SHUTDOWN = 3  # seconds open requests get to finish once a stop is asked for


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.telegram", description="A local stand-in for the Telegram Bot API."
    )
    parser.add_argument("--port", type=int, default=None,
                        help="port to listen on (env SANDBOX_PORT, default 8081)")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"],
                        help="loopback address to bind (the sandbox never binds elsewhere)")
    parser.add_argument("--bot-username", default=None,
                        help="username every bot reports (default sandbox<id>_bot)")
    parser.add_argument("--send-rate", type=int, default=None,
                        help="messages a second per bot, 0: no limit (env SANDBOX_SEND_RATE, "
                             "default 30)")
    parser.add_argument("--chat-burst", type=int, default=None,
                        help="messages per chat in any chat window, 0: no limit "
                             "(env SANDBOX_CHAT_BURST, default 3)")
    parser.add_argument("--chat-window", type=float, default=None,
                        help="seconds of the per-chat window, 0: no limit "
                             "(env SANDBOX_CHAT_WINDOW, default 3)")
    args = parser.parse_args(argv)
    args.limits = _limits(parser, args)
    if args.port is None:
        raw = os.environ.get("SANDBOX_PORT", "8081")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            parser.error(f"SANDBOX_PORT must be a port number, got {raw!r}")
        args.port = int(raw)
    return args


def _limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Limits:
    """The flood limits at start: each flag, else its SANDBOX_* variable, else the default."""
    values: dict[str, float] = {}
    for name, kind in (("send_rate", int), ("chat_burst", int), ("chat_window", float)):
        value = getattr(args, name)
        where = "--" + name.replace("_", "-")
        if value is None:
            where = f"SANDBOX_{name.upper()}"
            raw = os.environ.get(where, "").strip()
            try:
                value = kind(raw) if raw else getattr(Limits(), name)
            except ValueError:
                parser.error(f"{where} must be a number, got {raw!r}")
        if not 0 <= value < float("inf"):
            parser.error(f"{where} must be 0 or more, got {value}")
        values[name] = value
    return Limits(int(values["send_rate"]), int(values["chat_burst"]), values["chat_window"])


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the sandbox's long polls as soon as it is told to stop,
    so that shutdown does not wait for a 50-second getUpdates."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.sandbox_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop: asyncio.AbstractEventLoop | None = getattr(self.sandbox_app.state, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.sandbox_app.state.sandbox.close)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limits: Limits = args.limits
    app = create_app(bot_username=args.bot_username, limits=limits)
    base = f"http://{args.host}:{args.port}"
    print(f"sandbox: Telegram Bot API at {base}/bot , chat page at {base}/", flush=True)
    print(f"sandbox: flood limits {limits.send_rate}/s per bot, {limits.chat_burst} per chat "
          f"per {limits.chat_window:g} s (0: none)", flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
    server = _Server(config, app)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
