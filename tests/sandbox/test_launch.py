"""The `make run` launcher: what it fills in, what it refuses, what it reports, and how it
watches supervisord's programs (`sandbox.supervision`, against a real supervisord)."""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.launch import build_environment, busy_port, ensure_auth_secret
from sandbox.supervision import Credentials, Supervisor, Watcher, write_ctl_config
from shared.settings import SettingsError
from tests.fixtures.common import PYTHON, ROOT, base_env, free_port, wait_until
from tests.fixtures.sandbox import TelegramSandbox

SECRET = "launch-secret-" + "z" * 32
LAUNCH_VARIABLES = (
    "REDIS_URL", "TELEGRAM_BOT_TOKEN", "API_PROCESSES", "BOT_PROCESSES", "PORT", "BOT_MODE",
    "BOT_HOST", "BOT_PORT", "WEBHOOK_URL", "API_HOST", "API_PORT",
    "OIDC_ISSUER", "OIDC_CLIENTS", "OIDC_CLIENTS_FILE", "OIDC_SIGNING_KEY_FILE",
)


@pytest.fixture
def launch_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The launcher's process environment with none of the variables it fills in."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    return monkeypatch


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


def test_defaults_private_redis_and_sandbox(tmp_path: Path, launch_env: pytest.MonkeyPatch) -> None:
    env = build_environment(tmp_path)
    assert env["REDIS_URL"] == f"unix://{tmp_path}/var/redis.sock"
    assert env["TGLOGIN_PRIVATE_REDIS"] == env["TGLOGIN_SANDBOX"] == "true"
    assert env["TELEGRAM_API_BASE_URL"] == "http://127.0.0.1:8081/bot"
    assert (env["API_PROCESSES"], env["BOT_PROCESSES"], env["DEMO_PAGE"]) == ("2", "1", "1")
    assert (env["API_HOST"], env["API_PORT"]) == ("127.0.0.1", "8000")
    # polling: [program:bot] starts, the webhook program's socket is a file under var/
    assert (env["BOT_MODE"], env["TGLOGIN_BOT_POLLING"], env["TGLOGIN_BOT_WEBHOOK"]) == (
        "polling", "true", "false"
    )
    assert env["TGLOGIN_BOT_SOCKET"] == f"unix://{tmp_path}/var/bot-webhook.sock"
    assert "WEBHOOK_URL" not in env


def test_several_bot_processes_are_accepted(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("BOT_PROCESSES", "3")
    assert build_environment(tmp_path)["BOT_PROCESSES"] == "3"


def test_webhook_mode_with_the_sandbox_gets_a_loopback_url(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("BOT_MODE", "webhook")
    env = build_environment(tmp_path)
    assert env["WEBHOOK_URL"] == "http://127.0.0.1:8001/telegram/webhook"
    assert (env["BOT_HOST"], env["BOT_PORT"]) == ("127.0.0.1", "8001")
    assert (env["TGLOGIN_BOT_POLLING"], env["TGLOGIN_BOT_WEBHOOK"]) == ("false", "true")
    assert env["TGLOGIN_BOT_SOCKET"] == "tcp://127.0.0.1:8001"

    launch_env.setenv("BOT_PORT", "9005")
    launch_env.setenv("BOT_HOST", "0.0.0.0")
    env = build_environment(tmp_path)
    assert env["WEBHOOK_URL"] == "http://127.0.0.1:9005/telegram/webhook"
    assert env["TGLOGIN_BOT_SOCKET"] == "tcp://0.0.0.0:9005"

    launch_env.setenv("WEBHOOK_URL", "https://bot.example/hook")
    assert build_environment(tmp_path)["WEBHOOK_URL"] == "https://bot.example/hook"


def test_webhook_mode_with_a_real_token_needs_a_url(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("BOT_MODE", "webhook")
    launch_env.setenv("TELEGRAM_BOT_TOKEN", "123:real")
    with pytest.raises(SettingsError) as error:
        build_environment(tmp_path)
    assert error.value.variable == "WEBHOOK_URL"


@pytest.mark.parametrize("mode", ["polling", "webhook"])
def test_every_value_supervisord_conf_reads_is_set(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, mode: str
) -> None:
    launch_env.setenv("BOT_MODE", mode)
    env = build_environment(tmp_path)
    wanted = set(re.findall(r"%\(ENV_(\w+)\)s", (ROOT / "supervisord.conf").read_text()))
    assert wanted - set(env) == set()
    assert env["TGLOGIN_USER"] == str(os.getuid())


def test_supervisor_credentials_are_fresh_for_every_run(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    first, second = (Credentials.from_env(build_environment(tmp_path)) for _ in range(2))
    assert first.username != second.username and first.password != second.password
    assert len(first.password.reveal()) >= 32
    assert first.password.reveal() not in repr(first)

    write_ctl_config(tmp_path / "ctl.conf", tmp_path / "s.sock", first)
    assert oct((tmp_path / "ctl.conf").stat().st_mode)[-3:] == "600"
    ctl = configparser.ConfigParser(interpolation=None)
    ctl.read(tmp_path / "ctl.conf")
    assert dict(ctl["supervisorctl"]) == {
        "serverurl": f"unix://{tmp_path}/s.sock",
        "username": first.username,
        "password": first.password.reveal(),
    }


def test_every_program_restarts_on_any_exit_but_a_configuration_error() -> None:
    conf = configparser.RawConfigParser()
    conf.read(ROOT / "supervisord.conf")
    programs = [s for s in conf.sections() if s.startswith(("program:", "fcgi-program:"))]
    assert sorted(programs) == [
        "fcgi-program:api", "fcgi-program:botweb", "program:bot", "program:redis",
        "program:sandbox",
    ]
    for section in programs:
        # startsecs=0: an exit right after the start keeps its status (else supervisord
        # reports none), so a configuration error at start is seen as one
        assert (
            conf[section]["autorestart"], conf[section]["exitcodes"], conf[section]["startsecs"]
        ) == ("unexpected", "2", "0"), section


def test_ports_in_use_are_named(tmp_path: Path, launch_env: pytest.MonkeyPatch) -> None:
    launch_env.setenv("API_PORT", str(free_port()))
    launch_env.setenv("SANDBOX_PORT", str(free_port()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        launch_env.setenv("BOT_PORT", port)
        assert busy_port(build_environment(tmp_path)) is None  # polling: BOT_PORT unused
        launch_env.setenv("BOT_MODE", "webhook")
        assert busy_port(build_environment(tmp_path)) == (
            f"port {port} on 127.0.0.1 is in use; set BOT_PORT to another port"
        )
        launch_env.setenv("API_PORT", port)
        launch_env.setenv("BOT_PORT", port)
        assert busy_port(build_environment(tmp_path)) == (
            f"API_PORT and BOT_PORT are both {port}; set one to another port"
        )


def test_the_launcher_refuses_a_webhook_port_in_use(tmp_path: Path) -> None:
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(
            AUTH_SECRET=SECRET, API_PORT=str(free_port()), SANDBOX_PORT=str(free_port()),
            BOT_MODE="webhook", BOT_PORT=str(port),
        )
        done = subprocess.run(
            [PYTHON, "-m", "sandbox.launch"], env=env, cwd=tmp_path, capture_output=True,
            text=True, timeout=30,
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use; set BOT_PORT to another port" in done.stdout
    assert not (tmp_path / "var" / "supervisord.pid").exists()


def test_configured_redis_and_token_are_used(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("REDIS_URL", "redis://10.0.0.5:6379/0")
    launch_env.setenv("TELEGRAM_BOT_TOKEN", "123:real")
    env = build_environment(tmp_path)
    assert env["TGLOGIN_PRIVATE_REDIS"] == env["TGLOGIN_SANDBOX"] == "false"
    assert env["REDIS_URL"] == "redis://10.0.0.5:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [("BOT_PROCESSES", "0"), ("API_PROCESSES", "0"), ("SANDBOX_PORT", "x"), ("BOT_MODE", "push")],
)
def test_refused_settings_name_the_variable(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    launch_env.setenv(name, value)
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
    assert "bot:bot-0 exited with a configuration error (status 2" in output, output
    assert launcher.returncode == 2


# -- the watcher, against a real supervisord running small stand-in programs --------------

PROGRAM = """
[program:{name}]
command={command}
directory={directory}
startsecs={startsecs}
startretries=0
autorestart=unexpected
exitcodes=2
stdout_logfile=/dev/null
redirect_stderr=true
"""


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Callable[[dict[str, tuple[str, int]]], Supervisor]]:
    """Run supervisord with programs `name -> (python source, startsecs)`, with
    credentials as the launcher makes them; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def _start(programs: dict[str, tuple[str, int]]) -> Supervisor:
        credentials = Credentials.fresh()
        sock = tmp_path / "s.sock"
        sections = []
        for name, (source, startsecs) in programs.items():
            (tmp_path / f"{name}.py").write_text(source)
            sections.append(PROGRAM.format(
                name=name, command=f"{PYTHON} {name}.py", directory=tmp_path,
                startsecs=startsecs,
            ))
        conf = tmp_path / "supervisord.conf"
        conf.write_text(
            "[supervisord]\nnodaemon=true\nlogfile=/dev/null\nloglevel=warn\n"
            f"pidfile={tmp_path}/s.pid\nuser={os.getuid()}\n"
            f"[unix_http_server]\nfile={sock}\nchmod=0700\n"
            f"username={credentials.username}\npassword={credentials.password.reveal()}\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            + "".join(sections)
        )
        started.append(subprocess.Popen(
            [PYTHON, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        supervisor = Supervisor(sock, credentials)
        wait_until(supervisor.processes, timeout=10, what="supervisord to answer")
        return supervisor

    yield _start
    for proc in started:
        proc.terminate()
        proc.wait(15)


def test_a_fatal_program_is_started_again_with_growing_waits(
    tmp_path: Path, supervisord: Callable[[dict[str, tuple[str, int]]], Supervisor]
) -> None:
    # it fails its start (supervisord gives up at once: startretries=0) until `ok` exists
    supervisor = supervisord({"flaky": (
        "import os, sys, time\nos.path.exists('ok') or sys.exit(1)\ntime.sleep(60)", 1
    )})
    lines: list[str] = []
    watcher = Watcher(supervisor, lines.append)

    def revived(times: int) -> bool:
        watcher.look()
        return len(lines) >= times

    wait_until(lambda: revived(2), timeout=20, what="two revivals")
    (tmp_path / "ok").touch()
    wait_until(lambda: watcher.look().states.get("flaky:flaky") == "RUNNING", timeout=20,
               what="the program to run once it can")
    assert lines == [
        "flaky:flaky failed to start (FATAL); starting it again in 1 s",
        "flaky:flaky failed to start (FATAL); starting it again in 2 s",
    ]
    assert watcher.look().config_error is None


def test_exit_status_2_is_a_configuration_error_and_other_exits_restart(
    supervisord: Callable[[dict[str, tuple[str, int]]], Supervisor]
) -> None:
    supervisor = supervisord({
        # exits 2 at once, as a worker with bad settings does
        "misconfigured": ("import sys\nsys.exit(2)", 0),
        # exits 0 after a moment, as a worker does on an outside SIGTERM
        "stopping": ("import time\ntime.sleep(0.2)", 0),
    })
    watcher = Watcher(supervisor, pytest.fail)  # nothing goes FATAL, so it never says a line
    pids: set[int] = set()
    errors: set[str | None] = set()

    def restarted_three_times() -> bool:
        look = watcher.look()
        errors.add(look.config_error)
        pids.add(supervisor.processes()["stopping:stopping"]["pid"])
        return len(pids - {0}) >= 3 and look.config_error is not None

    wait_until(restarted_three_times, timeout=20, what="three runs of `stopping` and the error")
    assert errors - {None} == {"misconfigured:misconfigured"}
    info = supervisor.processes()["misconfigured:misconfigured"]
    assert (info["statename"], info["exitstatus"]) == ("EXITED", 2)
