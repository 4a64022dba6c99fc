"""`make run` on a fresh copy with no Redis and no token, then Ctrl+C."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.fixtures.bot import ANN
from tests.fixtures.common import PYTHON, ROOT, base_env, free_port, wait_until
from tests.fixtures.system import System, project_copy, session_processes


def test_make_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "tglogin")
    assert not (project / ".env").exists()
    env = base_env(API_PORT=str(free_port()), SANDBOX_PORT=str(free_port()))
    system = System(project=project, env=env, log=tmp_path / "make-run.log")
    # the test session's venv stands in for the one `make run` would create; its
    # install stamp must look current, or make would reinstall it from the copy
    stamp = (ROOT / ".venv" / ".installed").stat().st_mtime
    os.utime(project / "pyproject.toml", (stamp - 1, stamp - 1))
    system.start(["make", "--no-print-directory", "run", f"VENV={ROOT / '.venv'}"])
    try:
        output = system.output()
        sandbox_url = f"http://127.0.0.1:{env['SANDBOX_PORT']}/"
        assert f"chat with the bot (Telegram sandbox): {sandbox_url}" in output
        assert f"API: http://127.0.0.1:{env['API_PORT']}/" in output
        assert "AUTH_SECRET=" in (project / ".env").read_text()
        assert (project / "var" / "redis" / "appendonlydir").is_dir()  # private Redis data
        assert httpx.get(f"{system.api_url}/readyz").status_code == 200
        assert httpx.get(system.sandbox.url).status_code == 200
        assert system.redeem(system.new_code(ANN)).status_code == 200
        # supervisorctl with this run's credentials, from a file only the user may read
        ctl = project / "var" / "supervisorctl.conf"
        assert oct(ctl.stat().st_mode)[-3:] == "600"
        status = subprocess.run(
            [PYTHON, "-m", "supervisor.supervisorctl", "-c", str(ctl), "status", "api:*"],
            capture_output=True, text=True, timeout=30,
        )
        assert status.returncode == 0 and status.stdout.count("RUNNING") == 2, status

        assert system.proc is not None
        pid = system.proc.pid
        assert len(session_processes(pid)) >= 6  # make, launcher, supervisord, redis, sandbox, ...
        system.interrupt()
        system.proc.wait(10)  # raises if Ctrl+C takes longer
        wait_until(lambda: not session_processes(pid), timeout=10, what="no process left")
    finally:
        system.stop()
    output = system.output()
    assert "Traceback" not in output
    # supervisord has nothing critical to say: its socket asks for a password, its user is named
    assert not [line for line in output.splitlines() if " CRIT " in line], output
    password = next(
        line.split("=", 1)[1] for line in ctl.read_text().splitlines()
        if line.startswith("password=")
    )
    assert password not in output
