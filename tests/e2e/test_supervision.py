"""Supervision under `make run`: kill -9 and outside SIGTERMs never stop the system; a
configuration error does, and the launcher names the program."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.fixtures.bot import Message, code_of
from tests.fixtures.common import wait_until
from tests.fixtures.system import System, SystemStarter, session_processes

SIGNALS = (signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM)
# The sandbox goes last, after the bot has handled updates: a restarted sandbox numbers
# its updates from 1 again, which the bot must not take for ones it has already seen.
PROGRAMS = ("redis:redis", "api:api-0", "bot:bot-0", "sandbox:sandbox")
UNAVAILABLE = "temporarily unavailable"
# a bot process killed while it held the polling lease keeps it until it expires (15 s)
REPLY_TIMEOUT = 40.0


def test_killed_and_terminated_programs_come_back_and_the_flow_works(
    start_system: SystemStarter,
) -> None:
    # one API process, so the code is redeemed at the one that was restarted
    system = start_system(API_PROCESSES="1", CODE_ISSUE_LIMIT="100")
    assert system.proc is not None
    users = [_user(n) for n in range(len(PROGRAMS))]
    restart: dict[str, float] = {}
    recovery: dict[str, float] = {}
    for name, user in zip(PROGRAMS, users, strict=True):
        restart[name] = max(_signal_and_wait_for_restart(system, name, s) for s in SIGNALS)
        started = time.monotonic()
        assert system.proc.poll() is None, system.output()
        code = _new_code(system, user)
        redeemed = system.redeem(code)
        assert redeemed.status_code == 200, redeemed.text
        assert redeemed.json()["user"]["id"] == user["id"]
        recovery[name] = time.monotonic() - started
    print("longest signal-to-new-RUNNING-process:", restart)
    print("from the last restart to a redeemed code:", recovery)
    assert system.proc.poll() is None
    output = system.output()
    assert "stopping everything" not in output and "FATAL" not in output
    assert not [line for line in output.splitlines() if " CRIT " in line], output


def test_a_configuration_error_stops_everything_and_names_the_program(
    start_system: SystemStarter,
) -> None:
    system = start_system(API_PROCESSES="2")
    assert system.proc is not None
    # the API's PROMETHEUS_MULTIPROC_DIR can no longer be made: its next start exits 2
    metrics = system.project / "var" / "metrics"
    metrics.rename(metrics.with_name("metrics.before"))
    metrics.write_text("a file where the metrics directory was\n")
    os.kill(system.processes()["api:api-0"]["pid"], signal.SIGKILL)

    assert system.proc.wait(30) == 2
    output = system.output()
    assert "api_worker: configuration error: PROMETHEUS_MULTIPROC_DIR" in output
    assert (
        "tglogin: api:api-0 exited with a configuration error (status 2, its message is "
        "above); stopping everything"
    ) in output
    assert "tglogin: stopped" in output
    pid = system.proc.pid
    wait_until(lambda: not session_processes(pid), timeout=5, what="no process left")


def _user(n: int) -> Message:
    return {"id": 7100 + n, "first_name": f"User{n}", "username": f"user{n}",
            "language_code": "en"}


def _signal_and_wait_for_restart(system: System, name: str, signum: int) -> float:
    """Send `signum` to the program's process; wait until supervisord runs a new one.
    The seconds that took."""
    before = system.processes()[name]
    assert before["statename"] == "RUNNING" and before["pid"], before
    sent = time.monotonic()
    os.kill(before["pid"], signum)

    def running_anew() -> bool:
        now = system.processes()[name]
        return bool(now["statename"] == "RUNNING" and now["pid"] not in (0, before["pid"]))

    wait_until(running_anew, timeout=30, what=f"{name} to run again after signal {signum}")
    return time.monotonic() - sent


def _new_code(system: System, user: Message) -> str:
    """A code from the bot once the sandbox and the API answer again. A reply that Redis
    is unavailable asks again until a deadline; no reply at all fails."""
    wait_until(lambda: system.sandbox.get("/").status_code == 200, timeout=20,
               what="the sandbox to answer")
    wait_until(lambda: httpx.get(f"{system.api_url}/readyz").status_code == 200, timeout=20,
               what="the API to reach Redis")
    deadline = time.monotonic() + 30
    reply = system.ask("/code", user, timeout=REPLY_TIMEOUT)
    while UNAVAILABLE in reply["text"] and time.monotonic() < deadline:
        reply = system.ask("/code", user, timeout=REPLY_TIMEOUT)
    return code_of(reply)
