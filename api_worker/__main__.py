"""`python -m api_worker [--fd N]`: load settings, then serve the API under uvicorn.

`--fd 0` serves on a listening socket inherited as file descriptor 0, as
supervisord's `fcgi-program` hands it to every API process sharing one port.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from starlette.applications import Starlette

from api_worker.app import create_app
from api_worker.waiters import Waiters
from shared.settings import SettingsError, load_settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _fail(message: str, status: int) -> NoReturn:
    print(f"api_worker: {message}", file=sys.stderr)
    raise SystemExit(status)


def log_config(level: str) -> dict[str, Any]:
    """Everything to stdout in one format; uvicorn's loggers pass through the root. The
    formatter redacts query strings and login request ids (`api_worker.logs`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": "api_worker.logs.RedactingFormatter", "fmt": FORMAT}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # the HTTP client loggers are held at WARNING in every tglogin process
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


class _Server(uvicorn.Server):
    """uvicorn's server, which first lets held `?wait=` polls answer when it stops,
    so a stop does not sit out the graceful-shutdown timeout on them."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        waiters: Waiters | None = getattr(self._app.state, "waiters", None)
        if waiters is not None:
            waiters.close()
        await super().shutdown(sockets)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m api_worker", description=__doc__)
    parser.add_argument(
        "--fd",
        type=int,
        default=None,
        metavar="N",
        help="serve on the already listening socket at file descriptor N "
        "(supervisord fcgi-program: --fd 0) instead of API_HOST:API_PORT",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(f"configuration error: {exc}", 2)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # API processes sharing a socket share their metrics through files here
        try:
            Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"configuration error: PROMETHEUS_MULTIPROC_DIR cannot be created: {exc}", 2)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        fd=args.fd,
        log_config=log_config(settings.log_level),
        proxy_headers=True,
        timeout_graceful_shutdown=8,
        lifespan="on",
    )
    server = _Server(config, app)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful stop
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (e.g. the port is taken)


if __name__ == "__main__":
    main()
