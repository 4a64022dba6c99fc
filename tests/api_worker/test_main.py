"""`python -m api_worker` with bad configuration: one line naming the variable, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.common import run_module

SECRET = "s" * 40
HEAD_TIMEOUT = "API_HEADER_TIMEOUT_SECONDS"


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
        ({"AUTH_SECRET": SECRET, HEAD_TIMEOUT: "soon"}, HEAD_TIMEOUT),
        ({"AUTH_SECRET": SECRET, HEAD_TIMEOUT: "0"}, HEAD_TIMEOUT),
    ],
)
def test_bad_configuration_is_one_line(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    result = run_module("api_worker", env, tmp_path)
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
    result = run_module("api_worker", {}, tmp_path)
    assert result.returncode == 2
    assert "AUTH_SECRET must be at least 32 characters" in result.stderr


def test_uvicorn_import_path_fails_startup_in_one_line(tmp_path: Path) -> None:
    """`uvicorn api_worker.app:app` with a bad setting: a failed startup, no traceback."""
    result = run_module(
        "uvicorn", {"AUTH_SECRET": "x"}, tmp_path, "api_worker.app:app", "--port", "0"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "api_worker: configuration error: AUTH_SECRET" in output
    assert "Traceback" not in output
