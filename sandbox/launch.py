"""`make run`: start the whole system under supervisord, filling in what is missing.

- no `.env`: write one with a fresh random AUTH_SECRET;
- no REDIS_URL: run a private Redis-compatible server, data under var/redis;
- no TELEGRAM_BOT_TOKEN: run the local Telegram sandbox and point the bot at it.

It prints where to open the chat page and the API once they answer. Ctrl+C
(or SIGTERM) stops supervisord, which stops every program, within 10 s.
With REDIS_URL and TELEGRAM_BOT_TOKEN set it starts only the API and the bot,
so the same command serves a VM deployment.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from types import FrameType
from typing import Any

from dotenv import dotenv_values
from supervisor.xmlrpc import SupervisorTransport

from shared.settings import SettingsError, load_settings

SANDBOX_TOKEN = "7000000001:SANDBOX-local-token-not-a-real-bot-0000"
DEFAULT_SANDBOX_PORT = "8081"
STARTUP_TIMEOUT = 60.0


def _say(line: str) -> None:
    print(f"tglogin: {line}", flush=True)


def ensure_auth_secret(path: Path) -> bool:
    """Give `.env` a fresh AUTH_SECRET unless it or the environment has one;
    True if one was written."""
    existing = path.read_text() if path.exists() else ""
    if os.environ.get("AUTH_SECRET") or dotenv_values(stream=io.StringIO(existing)).get(
        "AUTH_SECRET"
    ):
        return False
    separator = "" if not existing or existing.endswith("\n") else "\n"
    path.write_text(
        existing + separator
        + "# written by `make run`; keep it secret, keep it the same in every process\n"
        f"AUTH_SECRET={secrets.token_urlsafe(48)}\n"
    )
    path.chmod(0o600)
    return True


def _program_states(var: Path) -> dict[str, str]:
    """supervisord's view: program name -> state (RUNNING, BACKOFF, FATAL, ...)."""
    transport = SupervisorTransport(None, None, serverurl=f"unix://{var}/supervisor.sock")
    try:
        rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        info: list[dict[str, Any]] = rpc.supervisor.getAllProcessInfo()  # type: ignore[assignment]
    except (OSError, xmlrpc.client.Error):
        return {}
    finally:
        transport.close()
    return {f"{p['group']}:{p['name']}": str(p["statename"]) for p in info}


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def build_environment(root: Path) -> dict[str, str]:
    """The environment supervisord and its programs run with."""
    env = dict(os.environ)
    file_values = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
    for name, value in file_values.items():
        env.setdefault(name, value)
    var = root / "var"
    env["TGLOGIN_VAR"] = str(var)
    env["TGLOGIN_PYTHON"] = sys.executable
    env.setdefault("API_PROCESSES", "2")
    env.setdefault("BOT_PROCESSES", "1")
    env.setdefault("DEMO_PAGE", "1")
    env.setdefault("SANDBOX_PORT", DEFAULT_SANDBOX_PORT)
    env["TGLOGIN_PRIVATE_REDIS"] = "false"
    env["TGLOGIN_SANDBOX"] = "false"
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = f"unix://{var}/redis.sock"
        env["TGLOGIN_PRIVATE_REDIS"] = "true"
    if not env.get("TELEGRAM_BOT_TOKEN"):
        env["TELEGRAM_BOT_TOKEN"] = SANDBOX_TOKEN
        env["TELEGRAM_API_BASE_URL"] = f"http://127.0.0.1:{env['SANDBOX_PORT']}/bot"
        env["TGLOGIN_SANDBOX"] = "true"
    for name in ("API_PROCESSES", "BOT_PROCESSES", "SANDBOX_PORT"):
        if not env[name].isdigit() or int(env[name]) < 1:
            raise SettingsError(name, f"must be a positive whole number, got {env[name]!r}")
    if int(env["BOT_PROCESSES"]) > 1:
        # several pollers would fight over getUpdates (409) until the Redis lease exists
        raise SettingsError("BOT_PROCESSES", "above 1 is not supported yet: run one bot process")
    settings = load_settings(env, env_file=root / ".env", require_bot_token=True)
    env["API_HOST"] = settings.api_host
    env["API_PORT"] = str(settings.api_port)
    # API processes share their Prometheus metrics through files here
    env["PROMETHEUS_MULTIPROC_DIR"] = str(var / "metrics")
    return env


def main() -> int:
    root = Path.cwd()
    if not (root / "supervisord.conf").is_file():
        _say("run me from the project directory (where supervisord.conf is)")
        return 2
    if ensure_auth_secret(root / ".env"):
        _say("wrote .env with a fresh random AUTH_SECRET")
    try:
        env = build_environment(root)
    except SettingsError as error:
        _say(f"configuration error: {error}")
        return 2

    api_host, api_port = env["API_HOST"], int(env["API_PORT"])
    sandbox = env["TGLOGIN_SANDBOX"] == "true"
    wanted = [("API_PORT", api_host, api_port)]
    if sandbox:
        wanted.append(("SANDBOX_PORT", "127.0.0.1", int(env["SANDBOX_PORT"])))
    for name, host, port in wanted:
        if not _port_free(host, port):
            _say(f"port {port} on {host} is in use; set {name} to another port")
            return 2

    var = Path(env["TGLOGIN_VAR"])
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir(parents=True, exist_ok=True)
    for stale in metrics.glob("*.db"):
        stale.unlink()
    (var / "redis").mkdir(parents=True, exist_ok=True)

    conf = str(root / "supervisord.conf")
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", conf], env=env, cwd=root
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    api_url = f"http://{'127.0.0.1' if api_host in ('0.0.0.0', '::') else api_host}:{api_port}"
    sandbox_url = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
    checks = [f"{api_url}/healthz"] + ([f"{sandbox_url}/"] if sandbox else [])
    deadline = time.monotonic() + STARTUP_TIMEOUT
    up = healthy = False
    while supervisord.poll() is None:
        states = _program_states(var)
        failed = sorted(name for name, state in states.items() if state in ("FATAL", "EXITED"))
        if failed:
            # exit status 2 is a configuration error: supervisord does not restart it
            _say(f"{', '.join(failed)} stopped and will not restart; see the log above")
            healthy = False
            forward(signal.SIGTERM, None)
            break
        ready = states and all(state in ("RUNNING", "STOPPED") for state in states.values())
        if not up and ready and all(_answers(url) for url in checks):
            up = healthy = True
            _say("running under supervisord; Ctrl+C stops everything")
            if sandbox:
                _say(f"chat with the bot (Telegram sandbox): {sandbox_url}/")
            _say(f"API: {api_url}/  (OpenAPI: {api_url}/openapi.json)")
            if env.get("DEMO_PAGE") == "1":
                _say(f"demo website: {api_url}/demo")
            if env["TGLOGIN_PRIVATE_REDIS"] == "true":
                _say(f"private Redis: {env['REDIS_URL']}")
        if not up and time.monotonic() > deadline:
            _say("the system did not come up in time; see the log above")
            forward(signal.SIGTERM, None)
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            supervisord.wait(0.2 if not up else 1.0)

    code = supervisord.wait()
    _say("stopped")
    return code if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
