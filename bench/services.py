"""The processes a run measures: a private Redis-compatible server, the API (product or
bare), the Telegram sandbox, bots (product or bare). Built on the tests' helpers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.fixtures.common import PYTHON, base_env, free_port, start, stop, wait_until
from tests.fixtures.redis import RedisServer
from tests.fixtures.sandbox import TelegramSandbox, make_token

__all__ = [
    "AS_DEPLOYED", "Process", "RedisServer", "TelegramSandbox", "free_port", "make_token",
    "server_stack", "start_api", "start_bot", "start_module", "start_redis", "start_sandbox",
]

AUTH_SECRET = "bench-secret-" + "b" * 40
# measured processes write stdout buffered, as under supervisord (the tests' helpers
# start theirs unbuffered, which would make every log line a write of its own)
AS_DEPLOYED = {"PYTHONUNBUFFERED": ""}


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.name} exited {self.proc.returncode}:\n{self.output()}")


def start_module(module: str, env: dict[str, str], log: Path, *args: str,
                 port: int = 0) -> Process:
    return Process(start([PYTHON, "-m", module, *args], base_env(**AS_DEPLOYED, **env), log),
                   log, port, env)


def server_stack(api: Process) -> dict[str, str]:
    """The event loop and HTTP parser an API process (api_worker or bench.bare_api) says it
    runs on, from its own log line (`server: uvloop event loop, httptools parser`)."""
    found = re.search(r"server: (\S+) event loop, (\S+) parser", api.output())
    if found is None:
        raise RuntimeError(f"{api.log.name} does not say which loop and parser it runs on")
    return {"uvicorn_loop": found.group(1), "uvicorn_http": found.group(2)}


def start_redis(workdir: Path, name: str = "redis") -> RedisServer:
    """A private server with its data in `workdir`/`name`."""
    server = RedisServer(port=free_port(), data_dir=workdir / name)
    server.start()
    return server


def start_api(module: str, redis_url: str, workdir: Path, name: str, **env: str) -> Process:
    """`python -m <module>` (api_worker or bench.bare_api) on a free port, once /healthz or
    the bare endpoint answers."""
    port = free_port()
    settings = {
        "AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url, "API_PORT": str(port),
        "API_HOST": "127.0.0.1", "FORWARDED_ALLOW_IPS": "127.0.0.1", **env,
    }
    api = start_module(module, settings, workdir / f"{name}.log", port=port)

    def ready() -> bool:
        api.alive()
        if "Application startup complete" not in api.output():
            return False
        answer = httpx.post(f"{api.url}/v1/codes/redeem", json={"code": "0"}, timeout=2)
        return answer.status_code in (200, 400)

    wait_until(ready, timeout=30, what=f"{name} to answer")
    return api


def start_sandbox(workdir: Path) -> TelegramSandbox:
    """The sandbox with its flood limits off: the bots, not the limits, are measured."""
    sandbox = TelegramSandbox(port=free_port(), log=workdir / "sandbox.log",
                              args=["--send-rate", "0", "--chat-burst", "0"])
    sandbox.start()
    return sandbox


def start_bot(module: str, sandbox: TelegramSandbox, redis_url: str, workdir: Path,
              **env: str) -> tuple[Process, str]:
    token = make_token()
    settings = {
        "TELEGRAM_BOT_TOKEN": token, "TELEGRAM_API_BASE_URL": sandbox.api_base,
        "REDIS_URL": redis_url, "AUTH_SECRET": AUTH_SECRET, **env,
    }
    bot = start_module(module, settings, workdir / f"{module}.log")

    def polling() -> bool:
        bot.alive()
        bot_id = int(token.split(":", 1)[0])
        return any(b["id"] == bot_id and b["get_updates_pending"] for b in sandbox.bots())

    wait_until(polling, timeout=30, what=f"{module} to poll the sandbox")
    return bot, token
