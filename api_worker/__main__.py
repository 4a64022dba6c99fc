"""`python -m api_worker [--fd N]`: load settings, then serve the API under uvicorn.

The server is uvicorn on uvloop (where installed) with httptools, uvicorn's fast
stack, under `BoundedProtocol`; the bench's bare endpoint runs on the same
`server_config`.

`--fd 0` serves on a listening socket inherited as file descriptor 0, as
supervisord's `fcgi-program` hands it to every API process sharing one port. The
socket is taken with its real family, so accepted TCP connections get TCP_NODELAY.
Keep-alive connections are recycled (`Connection: close` after RECYCLE_REQUESTS
requests or RECYCLE_SECONDS), so the processes sharing the socket share its clients.

Connections are bounded so that idle or slow clients cannot use a process up:
- a connection that has not sent a complete request head within
  API_HEADER_TIMEOUT_SECONDS (default 30) of opening, or of the first byte of its
  next request, is closed; trickling bytes does not extend it;
- a request head is at most 16 KiB, else it is answered 400 and closed;
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
import re
import resource
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import httptools
import uvicorn
from dotenv import dotenv_values
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api_worker.app import create_app
from api_worker.waiters import Waiters
from shared.log_output import lighten_records
from shared.settings import SettingsError, load_settings

logger = logging.getLogger("api_worker")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HEADER_TIMEOUT = 30  # seconds to send a complete request head (API_HEADER_TIMEOUT_SECONDS)
KEEP_ALIVE = 5  # seconds a connection may sit idle between requests
BACKLOG = 2048  # connections the kernel queues for accept (supervisord's socket_backlog)
TRUSTED_PROXIES = "127.0.0.1,::1"  # uvicorn's FORWARDED_ALLOW_IPS default
HEAD_LIMIT = 16 * 1024  # bytes of a request head (h11's limit, the API's parser before)
METHOD_LIMIT = 32  # bytes of a method that is no method llhttp knows
# methods fed to llhttp as they are; any other token goes as a PUT (BoundedProtocol)
_PLAIN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
RECYCLE_REQUESTS = 100  # requests a keep-alive connection serves before it is recycled
RECYCLE_SECONDS = 10  # seconds a connection is kept alive before it is recycled


def _fail(message: str, status: int) -> NoReturn:
    print(f"api_worker: {message}", file=sys.stderr)
    raise SystemExit(status)


def log_config(level: str) -> dict[str, Any]:
    """Everything to stdout in one format; uvicorn's loggers pass through the root. The
    formatter redacts query strings and login request ids, the handler flushes once per
    event-loop turn, records skip what no line shows (`api_worker.logs`,
    `shared.log_output`)."""
    lighten_records()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": "api_worker.logs.RedactingFormatter", "fmt": FORMAT}},
        "handlers": {
            "stdout": {
                "class": "shared.log_output.TickFlushingHandler",
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
            # the demo's OpenID Connect client: Authlib logs PKCE verifiers at DEBUG, and
            # httpx2/httpcore2 (its HTTP client) the requests' details
            "authlib": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
            "httpcore2": {"level": "WARNING"},
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


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, a C parser) with the API's connection bounds.

    - The request head has a deadline. uvicorn times only the keep-alive pause after a
      response; a new connection, or a next request begun and never finished, waits
      forever. Here a timer starts when a connection opens, or when the first byte of a
      next request arrives, and closes the connection unless the head is complete by
      then; more bytes do not move it.
    - The head has a size bound, HEAD_LIMIT bytes (h11's, which served the API before),
      so no client fills memory within the deadline; beyond it the answer is 400.
    - A request carrying both Content-Length and Transfer-Encoding is answered 400 and
      its connection closed: a proxy in front that believes Content-Length would see
      other requests than we do. llhttp refuses it; the answer says why, in the API's
      JSON error model like every malformed request.
    - Any method that is an HTTP token reaches the app (which answers 405 with `Allow`),
      as with h11: llhttp knows a fixed list of methods and would call the others
      malformed, so a request line starting a message with another token is parsed as a
      PUT and handed to the app under its own method.
    - A keep-alive connection is recycled: the response to its RECYCLE_REQUESTS-th
      request, or the first one after it has been open RECYCLE_SECONDS, carries
      `Connection: close`. Clients then connect again, and the new connection goes to
      whichever process sharing the socket accepts it first, so a few long-lived clients
      do not stay on the process that happened to accept them (README "Scaling").
    """

    header_timeout: float = HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened = self.loop.time()
        self._requests = 0
        self._refusal: str | None = None
        self._at_start = True  # the next byte begins a request
        self._in_message = False
        self._partial = b""  # the start of a request line whose method is not complete
        self._method: str | None = None  # the method llhttp does not know, parsed as PUT
        self._chunk = 0  # size of the chunk being parsed
        self._head_bytes = 0  # received since the pending head began
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_began()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the head's size bound, any token as a method, and the reason
        for a 400 kept."""
        self._unset_keepalive_if_required()
        if not self._in_message:
            # bytes between requests end the keep-alive pause, whatever they are (line
            # breaks before a request line reach no llhttp callback): the deadline of
            # the next head runs from them
            self._head_began()
        if self._head_timer is not None:
            self._head_bytes += len(data)
        if self._at_start:
            data = self._request_line(data)
            if not data:
                return
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._refusal is None and "Content-Length" in str(exc) \
                    and "Transfer-Encoding" in str(exc):
                self._refusal = (
                    "A request may not carry both Content-Length and Transfer-Encoding."
                )
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response(self._refusal or "")
            return
        self._at_start = not self._in_message
        if self._head_timer is not None and self._head_bytes > HEAD_LIMIT:
            self._refusal = f"The request head is larger than {HEAD_LIMIT // 1024} KiB."
            self.send_400_response(self._refusal)

    def _request_line(self, data: bytes) -> bytes:
        """What to feed llhttp of `data`, which begins a request: a method llhttp does not
        know replaced by PUT (the app gets the real one); b"" while the method is still
        arriving."""
        if self._partial:
            data, self._partial = self._partial + data, b""
        space = data.find(b" ", 0, METHOD_LIMIT + 1)
        if space < 0:
            if len(data) <= METHOD_LIMIT and _TOKEN.fullmatch(data):
                self._partial = data
                self._head_began()
                return b""
            return data
        method = data[:space]
        if method in _PLAIN_METHODS or not _TOKEN.fullmatch(method):
            return data
        self._method = method.decode("ascii")
        return b"PUT" + data[space:]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        if self._head_timer is None:
            self._head_bytes = self._chunk  # this chunk may hold the last one's end too
            self._head_began()

    def on_headers_complete(self) -> None:
        # bytes received since the head began (its own and maybe a body's, less at most
        # a held partial method's): well within the bound, so is the head, and its size
        # need not be counted
        received = self._head_bytes + METHOD_LIMIT if self._head_timer is not None \
            else HEAD_LIMIT + 1
        self._head_done()
        method, self._method = self._method, None
        if received > HEAD_LIMIT and len(self.url) + sum(
            len(n) + len(v) + 4 for n, v in self.headers
        ) > HEAD_LIMIT:
            self._refusal = f"The request head is larger than {HEAD_LIMIT // 1024} KiB."
            raise ValueError(self._refusal)  # llhttp stops: data_received answers 400
        super().on_headers_complete()
        if method is not None:
            self.scope["method"] = method  # the app's task has not run yet
        self._requests += 1
        if self.cycle is not None and (
            self._requests >= RECYCLE_REQUESTS
            or self.loop.time() - self._opened >= RECYCLE_SECONDS
        ):
            self.cycle.keep_alive = False  # the response says `Connection: close`

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False

    def _head_began(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, in the API's JSON error model."""
        self._head_done()
        message = self._refusal or "The request is not valid HTTP."
        body = json.dumps({"error": "invalid_request", "message": message}).encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def protocol(header_timeout: float) -> type[BoundedProtocol]:
    """The protocol class for uvicorn's `http` setting, with this head deadline."""
    return type("BoundedProtocol", (BoundedProtocol,), {"header_timeout": header_timeout})


def server_config(
    app: Starlette, *, host: str, port: int, log_level: str, forwarded_allow_ips: str,
    header_timeout: float,
) -> uvicorn.Config:
    """The API's uvicorn configuration, which the bench's bare endpoint runs on too: uvloop
    where it is installed (uvicorn's "auto"), httptools under the connection bounds of
    `BoundedProtocol`, proxy headers from `forwarded_allow_ips`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=protocol(header_timeout),
        log_config=log_config(log_level),
        proxy_headers=True,
        forwarded_allow_ips=trusted_proxies(forwarded_allow_ips),
        timeout_keep_alive=KEEP_ALIVE,
        backlog=BACKLOG,
        timeout_graceful_shutdown=8,
        lifespan="on",
    )


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket at file descriptor `fd` (a copy), with its real family.

    uvicorn's own `fd` setting wraps it as a Unix-domain socket whatever it is: the loop
    then never sets TCP_NODELAY on accepted TCP connections, and every response on a
    reused connection waits for the client's delayed acknowledgement (about 40 ms);
    uvloop would even serve it as a pipe. `socket.socket(fileno=...)` asks the kernel."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ValueError(f"file descriptor {fd} is not a socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.close()
        raise ValueError(f"file descriptor {fd} is not a listening stream socket")
    return sock


def describe(sock: socket.socket) -> str:
    """`127.0.0.1:8000`, `[::]:8000` or the path of a Unix-domain socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return str(name)


class Server(uvicorn.Server):
    """uvicorn's server, which says which loop and parser serve once it listens, and
    first lets held `?wait=` polls answer when it stops, so a stop does not sit out the
    graceful-shutdown timeout on them."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        parser = "httptools" if issubclass(
            self.config.http_protocol_class, HttpToolsProtocol) else "h11"
        logger.info("server: %s event loop, %s parser", loop, parser)

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
    config = server_config(
        app, host=settings.api_host, port=settings.api_port, log_level=settings.log_level,
        forwarded_allow_ips=values.get("FORWARDED_ALLOW_IPS", TRUSTED_PROXIES),
        header_timeout=header_timeout,
    )
    logger.info(
        "connections: request head within %d s, keep-alive %d s (recycled after %d requests "
        "or %d s), descriptor limit %d%s",
        header_timeout, KEEP_ALIVE, RECYCLE_REQUESTS, RECYCLE_SECONDS, descriptors,
        f" (raised from {before})" if descriptors != before else "",
    )
    sockets: list[socket.socket] | None = None
    if args.fd is not None:
        try:
            sockets = [inherited_socket(args.fd)]
        except ValueError as exc:
            _fail(f"--fd {args.fd}: {exc}", 2)
        logger.info("listening on %s, inherited as file descriptor %d",
                    describe(sockets[0]), args.fd)
    elif settings.api_host == "::":
        try:
            sockets = [dual_stack_socket(settings.api_port)]
        except OSError as exc:
            logger.error("cannot listen on [::]:%d: %s", settings.api_port, exc)
            raise SystemExit(3) from None
        logger.info("listening on [::]:%d, IPv6 and IPv4", settings.api_port)
    server = Server(config, app)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its graceful stop
        pass
    if not server.started:
        raise SystemExit(3)  # uvicorn logged why (e.g. the port is taken)


if __name__ == "__main__":
    main()
