"""The Procfile's process types run as a Procfile platform runs them."""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx

from tests.fixtures.bot import ANN, code_of
from tests.fixtures.common import PYTHON, ROOT, base_env, free_port, start, stop, wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token

SECRET = "procfile-secret-" + "y" * 32


def procfile() -> dict[str, list[str]]:
    types = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip():
            args = shlex.split(command)
            types[name.strip()] = [PYTHON if args[0] == "python" else args[0], *args[1:]]
    return types


def test_web_listens_on_port_and_bot_answers(
    tmp_path: Path, redis_url: str, sandbox: TelegramSandbox
) -> None:
    types = procfile()
    assert sorted(types) == ["bot", "web"]
    port = free_port()
    token = make_token()
    env = base_env(
        PORT=str(port), AUTH_SECRET=SECRET, REDIS_URL=redis_url,
        TELEGRAM_BOT_TOKEN=token, TELEGRAM_API_BASE_URL=sandbox.api_base,
    )
    web = start(types["web"], env, tmp_path / "web.log", cwd=tmp_path)
    bot = start(types["bot"], env, tmp_path / "bot.log", cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=20,
                   what="web on $PORT")
        wait_until(lambda: any(b["get_updates_pending"] for b in sandbox.bots()), timeout=20,
                   what="bot polling")
        sent = sandbox.send("/code", user=ANN, token=token)
        reply = sandbox.wait_for_bot_message(sent["chat_id"], after=sent["message_id"],
                                             timeout=20, token=token)
        redeemed = httpx.post(f"{url}/v1/codes/redeem", json={"code": code_of(reply)})
        assert redeemed.status_code == 200, redeemed.text
    finally:
        assert stop(web) in (0, -15)  # uvicorn re-raises SIGTERM after its clean shutdown
        assert stop(bot) == 0
    assert "Traceback" not in (tmp_path / "web.log").read_text()
    assert "Traceback" not in (tmp_path / "bot.log").read_text()
