"""The `make run` launcher: what it fills in, what it refuses, what it reports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from sandbox.launch import build_environment, ensure_auth_secret
from shared.settings import SettingsError
from tests.fixtures.common import PYTHON, ROOT, base_env, free_port
from tests.fixtures.sandbox import TelegramSandbox

SECRET = "launch-secret-" + "z" * 32


def test_env_file_gets_a_secret_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    env_file = tmp_path / ".env"
    assert ensure_auth_secret(env_file)
    first = env_file.read_text()
    assert "AUTH_SECRET=" in first and oct(env_file.stat().st_mode)[-3:] == "600"
    assert not ensure_auth_secret(env_file)
    assert env_file.read_text() == first


def test_env_file_without_a_secret_gets_one_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("CODE_LENGTH=10")
    assert ensure_auth_secret(env_file)
    lines = env_file.read_text().splitlines()
    assert lines[0] == "CODE_LENGTH=10" and lines[-1].startswith("AUTH_SECRET=")


def test_defaults_private_redis_and_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REDIS_URL", "TELEGRAM_BOT_TOKEN", "API_PROCESSES", "BOT_PROCESSES", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    env = build_environment(tmp_path)
    assert env["REDIS_URL"] == f"unix://{tmp_path}/var/redis.sock"
    assert env["TGLOGIN_PRIVATE_REDIS"] == env["TGLOGIN_SANDBOX"] == "true"
    assert env["TELEGRAM_API_BASE_URL"] == "http://127.0.0.1:8081/bot"
    assert (env["API_PROCESSES"], env["BOT_PROCESSES"], env["DEMO_PAGE"]) == ("2", "1", "1")
    assert (env["API_HOST"], env["API_PORT"]) == ("127.0.0.1", "8000")


def test_configured_redis_and_token_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6379/0")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:real")
    env = build_environment(tmp_path)
    assert env["TGLOGIN_PRIVATE_REDIS"] == env["TGLOGIN_SANDBOX"] == "false"
    assert env["REDIS_URL"] == "redis://10.0.0.5:6379/0"


@pytest.mark.parametrize(
    ("name", "value"), [("BOT_PROCESSES", "2"), ("API_PROCESSES", "0"), ("SANDBOX_PORT", "x")]
)
def test_refused_settings_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        build_environment(tmp_path)
    assert error.value.variable == name


def test_a_program_that_cannot_start_is_reported_and_everything_stops(
    tmp_path: Path, sandbox: TelegramSandbox
) -> None:
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    env = base_env(
        AUTH_SECRET=SECRET, API_PORT=str(free_port()),
        TELEGRAM_BOT_TOKEN="1:rejected", TELEGRAM_API_BASE_URL=sandbox.api_base,
    )
    launcher = subprocess.Popen(
        [PYTHON, "-m", "sandbox.launch"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = launcher.communicate(timeout=60)
    finally:  # supervisord and its programs must not outlive a failed test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    assert "bot:bot-0 stopped and will not restart" in output, output
    assert launcher.returncode == 1
