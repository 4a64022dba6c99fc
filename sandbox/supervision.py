"""Watching supervisord's programs for `make run`, over its XML-RPC interface.

supervisord itself restarts a program on any exit but status 2
(`autorestart=unexpected`, `exitcodes=2`), and `startsecs=0` keeps the status
of every exit, even one right after the start. The watcher adds the two
decisions supervisord cannot make:

- a program that exited with status 2 (the workers' configuration error) is
  reported, and the launcher stops everything: restarting cannot help;
- a program supervisord gave up on (FATAL: it could not be spawned, or failed
  its start `startretries` times) is started again after 1, 2, 4 ... at most
  30 seconds, with one line each time, so no failure, however often, stops
  the system.

supervisord's socket asks for a user name and password made fresh for every
run; `supervisorctl -c var/supervisorctl.conf status` reads them from a file
only the user can read.

`python -m sandbox.supervision -n -c supervisord.conf` is supervisord itself, able
to open an IPv6 `fcgi-program` socket (`socket=tcp://[::1]:8000`; `tcp://[::]:8000`
listens on every address of both families). supervisord's own socket parser takes
IPv4 and host names only; everything else is supervisord unchanged.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import secrets
import socket
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor import supervisord
from supervisor.datatypes import InetStreamSocketConfig
from supervisor.options import ServerOptions
from supervisor.states import SupervisorStates
from supervisor.xmlrpc import SupervisorTransport

from shared.settings import Secret

CONFIG_ERROR = 2  # the exit status both workers use for bad settings
REVIVE_FIRST = 1.0  # seconds before starting a FATAL program again; doubles each time
REVIVE_MAX = 30.0
# what a call raises while supervisord is not listening yet, or is going away
_UNREACHABLE = (OSError, http.client.HTTPException, xmlrpc.client.Error)


@dataclass(frozen=True)
class Credentials:
    """The user name and password of supervisord's socket (the password never shows)."""

    username: str
    password: Secret

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(f"tglogin-{secrets.token_hex(4)}", Secret(secrets.token_urlsafe(32)))

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Credentials:
        """The ones `supervisord.conf` reads (TGLOGIN_SUPERVISOR_USER / _PASSWORD)."""
        return cls(env["TGLOGIN_SUPERVISOR_USER"], Secret(env["TGLOGIN_SUPERVISOR_PASSWORD"]))

    def as_env(self) -> dict[str, str]:
        return {
            "TGLOGIN_SUPERVISOR_USER": self.username,
            "TGLOGIN_SUPERVISOR_PASSWORD": self.password.reveal(),
        }


def write_ctl_config(path: Path, socket: Path, credentials: Credentials) -> None:
    """A supervisorctl configuration for this run, readable by the user alone."""
    text = (
        "; written by `make run` for this run: supervisorctl -c var/supervisorctl.conf status\n"
        "[supervisorctl]\n"
        f"serverurl=unix://{socket}\n"
        f"username={credentials.username}\n"
        f"password={credentials.password.reveal()}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file keeps its mode otherwise
        out.write(text)


class Supervisor:
    """supervisord's XML-RPC interface on its unix socket."""

    def __init__(self, socket: Path, credentials: Credentials) -> None:
        self._url = f"unix://{socket}"
        self._credentials = credentials

    def _call(self, method: str, *args: Any) -> Any:
        transport = SupervisorTransport(
            self._credentials.username, self._credentials.password.reveal(), self._url
        )
        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()

    def processes(self) -> dict[str, dict[str, Any]]:
        """`group:name` -> getProcessInfo (statename, exitstatus, pid, ...).
        Raises one of _UNREACHABLE while supervisord does not answer."""
        info: list[dict[str, Any]] = self._call("getAllProcessInfo")
        return {f"{p['group']}:{p['name']}": p for p in info}

    def start(self, name: str) -> None:
        self._call("startProcess", name, False)


@dataclass
class _Revival:
    delay: float
    due: float
    started: bool = False


@dataclass
class Look:
    """What the watcher saw: every program's state, and one that must stop the system."""

    states: dict[str, str] = field(default_factory=dict)
    config_error: str | None = None


class Watcher:
    """Looks at supervisord's programs each time `look` is called (the launcher's loop)."""

    def __init__(
        self,
        supervisor: Supervisor,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._supervisor = supervisor
        self._say = say
        self._clock = clock
        self._revivals: dict[str, _Revival] = {}

    def look(self) -> Look:
        try:
            processes = self._supervisor.processes()
        except _UNREACHABLE:
            return Look()  # not listening yet, or going away
        look = Look(states={name: str(p["statename"]) for name, p in processes.items()})
        for name, p in sorted(processes.items()):
            state = look.states[name]
            if state == "EXITED" and p["exitstatus"] == CONFIG_ERROR:
                look.config_error = look.config_error or name
            elif state == "FATAL":
                self._revive(name)
            elif state == "RUNNING":
                self._revivals.pop(name, None)  # up again: the next failure starts over
        return look

    def _revive(self, name: str) -> None:
        now = self._clock()
        revival = self._revivals.get(name)
        if revival is None or revival.started:
            delay = REVIVE_FIRST if revival is None else min(revival.delay * 2, REVIVE_MAX)
            revival = self._revivals[name] = _Revival(delay=delay, due=now + delay)
            self._say(f"{name} failed to start (FATAL); starting it again in {delay:.0f} s")
        if now < revival.due:
            return
        revival.started = True
        try:
            self._supervisor.start(name)
        except xmlrpc.client.Fault:
            pass  # a spawn error: it is FATAL again soon, and waits longer
        except _UNREACHABLE:
            revival.started = False  # supervisord did not answer: try at the next look


# -- supervisord with IPv6 fcgi-program sockets ------------------------------------------

_TCP6 = re.compile(r"tcp://\[([^\]\s]+)\]:(\d+)")


def tcp_socket(host: str, port: int) -> str:
    """An fcgi-program `socket=` value: `tcp://[::1]:8000` for an IPv6 address."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class Inet6StreamSocketConfig(InetStreamSocketConfig):  # type: ignore[misc]
    """A TCP socket on an IPv6 address; `::` is dual-stack (IPv4 clients too)."""

    def __init__(self, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self.url = tcp_socket(self.host, self.port)

    def create_and_bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # off: `::` takes IPv4 connections too, whatever net.ipv6.bindv6only says
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock


class Ipv6ServerOptions(ServerOptions):  # type: ignore[misc]
    """supervisord's options, reading `socket=tcp://[<IPv6 address>]:<port>` too."""

    def parse_fcgi_socket(
        self, sock: str, proc_uid: Any, socket_owner: Any, socket_mode: Any,
        socket_backlog: Any,
    ) -> Any:
        match = _TCP6.fullmatch(sock)
        if match is None:
            return super().parse_fcgi_socket(
                sock, proc_uid, socket_owner, socket_mode, socket_backlog
            )
        host, port = match.group(1), int(match.group(2))
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address in {sock}") from None
        if socket_owner is not None or socket_mode is not None:
            raise ValueError(
                "socket_owner and socket_mode params should only be used with a Unix domain "
                "socket"
            )
        return Inet6StreamSocketConfig(host, port, backlog=socket_backlog)


def run_supervisord(args: list[str]) -> None:
    """supervisord's `main` (restarting itself on SIGHUP as it does) with IPv6 sockets."""
    first = True
    while True:
        options = Ipv6ServerOptions()
        options.realize(args, doc=supervisord.__doc__)
        options.first = first
        options.test = False
        supervisord.go(options)
        options.close_httpservers()
        options.close_logger()
        first = False
        if options.mood < SupervisorStates.RESTARTING:
            break


if __name__ == "__main__":
    run_supervisord(sys.argv[1:])
