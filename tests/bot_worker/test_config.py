"""`python -m bot_worker` with bad configuration: one line naming the variable, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.common import run_module
from tests.fixtures.sandbox import TelegramSandbox

TOKEN = "123456:" + "A" * 35
SECRET = "s" * 40


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUTH_SECRET": SECRET}, "TELEGRAM_BOT_TOKEN"),
        ({"AUTH_SECRET": "short", "TELEGRAM_BOT_TOKEN": TOKEN}, "AUTH_SECRET"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN}, "AUTH_SECRET"),
        ({"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN, "CODE_LENGTH": "3"}, "CODE_LENGTH"),
        ({"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN, "REDIS_URL": "http://x"},
         "REDIS_URL"),
        ({"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN, "CODE_TTL_SECONDS": "abc"},
         "CODE_TTL_SECONDS"),
        ({"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN, "REDIS_URL": "redis://[::1"},
         "REDIS_URL"),
    ],
)
def test_bad_config_is_one_line_naming_the_variable(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    result = run_module("bot_worker", env, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bot_worker: configuration error: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert TOKEN not in result.stderr + result.stdout


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    # the .env supplies the secret; the missing token is then what is reported
    (tmp_path / ".env").write_text(f"AUTH_SECRET={SECRET}\n")
    result = run_module("bot_worker", {}, tmp_path)
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr


def test_token_the_bot_api_rejects_is_one_line_and_exit_2(
    sandbox: TelegramSandbox, redis_url: str, tmp_path: Path
) -> None:
    bad = "123456:too-short"  # the sandbox answers 401 Unauthorized, as Telegram does
    result = run_module(
        "bot_worker",
        {"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": bad,
         "TELEGRAM_API_BASE_URL": sandbox.api_base, "REDIS_URL": redis_url},
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bot_worker: configuration error: TELEGRAM_BOT_TOKEN was rejected by the Bot API"
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert bad not in result.stdout + result.stderr
