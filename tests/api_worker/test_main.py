"""`python -m api_worker` with bad configuration: one line naming the variable, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import PYTHON, ROOT, base_env

SECRET = "s" * 40


def run_api(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # cwd is an empty temp dir, so no .env is read; PYTHONPATH finds the project
    return subprocess.run(
        [PYTHON, "-m", "api_worker", *args],
        env=base_env(PYTHONPATH=str(ROOT), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "AUTH_SECRET"),
        ({"AUTH_SECRET": "x" * 10}, "AUTH_SECRET"),
        ({"AUTH_SECRET": SECRET, "REDIS_URL": "nope://x"}, "REDIS_URL"),
        ({"AUTH_SECRET": SECRET, "REDIS_URL": "redis://[::1"}, "REDIS_URL"),
        ({"AUTH_SECRET": SECRET, "REDIS_URL": "redis://h/0?socket_timeout=x"}, "REDIS_URL"),
        ({"AUTH_SECRET": SECRET, "CODE_TTL_SECONDS": "abc"}, "CODE_TTL_SECONDS"),
        ({"AUTH_SECRET": SECRET, "API_KEYS": "name:"}, "API_KEYS"),
        ({"AUTH_SECRET": SECRET, "PORT": "http"}, "PORT"),
        ({"AUTH_SECRET": SECRET, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_configuration_is_one_line(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    result = run_api(env, tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("api_worker: configuration error: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if "AUTH_SECRET" in env:
        assert env["AUTH_SECRET"] not in result.stderr + result.stdout


def test_env_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AUTH_SECRET=short\n")
    result = run_api({}, tmp_path)
    assert result.returncode == 2
    assert "AUTH_SECRET must be at least 32 characters" in result.stderr


def test_uvicorn_import_path_fails_startup_in_one_line(tmp_path: Path) -> None:
    """`uvicorn api_worker.app:app` with a bad setting: a failed startup, no traceback."""
    result = subprocess.run(
        [PYTHON, "-m", "uvicorn", "api_worker.app:app", "--port", "0"],
        env=base_env(PYTHONPATH=str(ROOT), AUTH_SECRET="x"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "api_worker: configuration error: AUTH_SECRET" in output
    assert "Traceback" not in output
