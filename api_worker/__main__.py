"""`python -m api_worker [--fd N]`: load settings, then serve the API under uvicorn.

`--fd 0` serves on a listening socket inherited as file descriptor 0, as
supervisord's `fcgi-program` hands it to every API process sharing one port.

Connections are bounded so that idle or slow clients cannot use a process up:
- a connection that has not sent a complete request head within
  API_HEADER_TIMEOUT_SECONDS (default 30) of opening, or of the first byte of its
  next request, is closed; trickling bytes does not extend it;
- a keep-alive connection idle between requests is closed after 5 s;
- a request carrying both Content-Length and Transfer-Encoding (a request
  smuggling shape) is answered 400 and its connection closed;
- the process raises its soft descriptor limit (RLIMIT_NOFILE) to the hard limit at
  start, so thousands of connections fit while the deadlines above reap idle ones.

API_HOST may be an IPv6 address; `::` listens on every address of both families
(dual-stack), as supervisord's socket for it does. The proxies of
FORWARDED_ALLOW_IPS are trusted by their IPv4 addresses also when they arrive on
such a socket as IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import resource
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import h11
import uvicorn
from dotenv import dotenv_values
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from api_worker.app import create_app
from api_worker.waiters import Waiters
from shared.settings import SettingsError, load_settings

logger = logging.getLogger("api_worker")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HEADER_TIMEOUT = 30  # seconds to send a complete request head (API_HEADER_TIMEOUT_SECONDS)
KEEP_ALIVE = 5  # seconds a connection may sit idle between requests
BACKLOG = 2048  # connections the kernel queues for accept (supervisord's socket_backlog)
TRUSTED_PROXIES = "127.0.0.1,::1"  # uvicorn's FORWARDED_ALLOW_IPS default


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


def _environment() -> dict[str, str]:
    """The variables as settings read them: `.env` in the working directory, then the
    environment, which wins."""
    values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    values.update(os.environ)
    return values


def _seconds(values: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise SettingsError(name, f"must be a whole number of seconds from {low} to {high}, "
                            f"got {raw!r}")
    return int(raw)


def trusted_proxies(raw: str) -> list[str]:
    """FORWARDED_ALLOW_IPS for uvicorn, each IPv4 address or network also in its
    IPv4-mapped IPv6 form (how a dual-stack socket shows an IPv4 peer)."""
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    mapped: list[str] = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue  # "*", a host name or a unix socket path: uvicorn reads it as it is
        if isinstance(network, ipaddress.IPv4Network):
            address = f"::ffff:{network.network_address}"
            mapped.append(f"{address}/{96 + network.prefixlen}" if "/" in entry else address)
    return entries + mapped


def dual_stack_socket(port: int) -> socket.socket:
    """A socket bound to [::]:port that takes IPv4 connections too (asyncio would make
    it IPv6-only)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    return sock


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
            return soft, soft
        return soft, wanted
    return soft, soft


class _Connection(h11.Connection):
    """h11's server side, which refuses a request carrying both Content-Length and
    Transfer-Encoding: h11 would let Transfer-Encoding win (RFC 9112 allows it), but a
    proxy in front that believes Content-Length would see other requests than we do."""

    refusal: str | None = None

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self.refusal = (
                    "A request may not carry both Content-Length and Transfer-Encoding."
                )
                raise h11.RemoteProtocolError(self.refusal)
        return event


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head.

    uvicorn times only the keep-alive pause after a response; a new connection, or a
    next request begun and never finished, waits forever. Here a timer starts when a
    connection opens, or when the first byte of a next request arrives, and closes the
    connection unless the head is complete by then; more bytes do not move it.
    """

    header_timeout: float = HEADER_TIMEOUT

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        size = config.h11_max_incomplete_event_size
        self.conn = _Connection(h11.SERVER) if size is None else _Connection(h11.SERVER, size)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_head()

    def _watch_head(self) -> None:
        """Time the head while one is awaited: no request yet in this cycle, and not the
        keep-alive pause (which uvicorn times itself)."""
        awaiting = (
            self.conn.their_state is h11.IDLE
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        )
        if not awaiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, in the API's JSON error model."""
        message = self.conn.refusal if isinstance(self.conn, _Connection) else None
        body = json.dumps(
            {"error": "invalid_request", "message": message or "The request is not valid HTTP."}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def protocol(header_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class for uvicorn's `http` setting, with this head deadline."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"header_timeout": header_timeout})


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
        values = _environment()
        header_timeout = _seconds(values, "API_HEADER_TIMEOUT_SECONDS", HEADER_TIMEOUT, 1, 3600)
    except SettingsError as exc:
        _fail(f"configuration error: {exc}", 2)
    before, descriptors = raise_descriptor_limit()
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
        forwarded_allow_ips=trusted_proxies(values.get("FORWARDED_ALLOW_IPS", TRUSTED_PROXIES)),
        http=protocol(header_timeout),
        timeout_keep_alive=KEEP_ALIVE,
        backlog=BACKLOG,
        timeout_graceful_shutdown=8,
        lifespan="on",
    )
    logger.info(
        "connections: request head within %d s, keep-alive %d s, descriptor limit %d%s",
        header_timeout, KEEP_ALIVE, descriptors,
        f" (raised from {before})" if descriptors != before else "",
    )
    sockets: list[socket.socket] | None = None
    if args.fd is None and settings.api_host == "::":
        try:
            sockets = [dual_stack_socket(settings.api_port)]
        except OSError as exc:
            logger.error("cannot listen on [::]:%d: %s", settings.api_port, exc)
            raise SystemExit(3) from None
        logger.info("listening on [::]:%d, IPv6 and IPv4", settings.api_port)
    server = _Server(config, app)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful stop
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (e.g. the port is taken)


if __name__ == "__main__":
    main()
