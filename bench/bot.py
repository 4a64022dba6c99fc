"""`python -m bench.bot`: only `make bench`'s bot phase, repeated, bare and product side by
side on one sandbox and one Redis, alternating which goes first.

    python -m bench.bot [--rounds 3] [--updates 1500] [--profile DIR] [--baseline DIR]

Each round starts a bare python-telegram-bot bot (`bench.bare_bot`) and the product bot
(`bot_worker`, BOT_SEND_RATE=100000), one after the other, each answering `--updates`
users who send `/start` at once (`bench.measure.bot_replies_per_s`), and prints both
rates and their ratio, and the CPU each process spent per reply (the bot, the sandbox
and Redis share the machine's cores, so all three count). `--profile DIR` records the
bots with py-spy (`--native`, raw collapsed stacks per round in DIR), when
py-spy is installed; py-spy slows what it samples, so rates of a profiled run are not
comparable.
`--baseline DIR` adds, in every round, the product bot as checked out in DIR (e.g. a
`git worktree` of an earlier commit), so a change is measured against what it changes
in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import measure
from bench.services import (
    AS_DEPLOYED,
    AUTH_SECRET,
    Process,
    RedisServer,
    TelegramSandbox,
    make_token,
    start_bot,
    start_redis,
    start_sandbox,
)
from tests.fixtures.common import PYTHON, base_env, start, wait_until

PRODUCT_ENV = {"BOT_SEND_RATE": "100000"}
BARE, PRODUCT, BASELINE = "bench.bare_bot", "bot_worker", "baseline"


def _start_baseline(checkout: Path, sandbox: TelegramSandbox, redis_url: str,
                    workdir: Path) -> tuple[Process, str]:
    """`python -m bot_worker` run from `checkout`, as `start_bot` runs this one."""
    token = make_token()
    env = {
        "TELEGRAM_BOT_TOKEN": token, "TELEGRAM_API_BASE_URL": sandbox.api_base,
        "REDIS_URL": redis_url, "AUTH_SECRET": AUTH_SECRET, **PRODUCT_ENV,
    }
    log = workdir / "baseline.log"
    bot = Process(start([PYTHON, "-m", "bot_worker"], base_env(**AS_DEPLOYED, **env), log,
                        cwd=checkout),
                  log, 0, env)
    bot_id = int(token.split(":", 1)[0])

    def polling() -> bool:
        bot.alive()
        return any(b["id"] == bot_id and b["get_updates_pending"] for b in sandbox.bots())

    wait_until(polling, timeout=30, what="the baseline bot to poll the sandbox")
    return bot, token


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU `pid` has spent so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None
    )


def _record(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = _py_spy()
    if spy is None:
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [spy, "record", "--native", "--rate", "250", "--format", "raw",
         "--pid", str(pid), "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@dataclass
class Round:
    """One round: each bot's replies/s, and its CPU ms per reply (bot, sandbox, Redis)."""

    order: list[str]
    rates: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.rates[PRODUCT] / self.rates[BARE]


def compare(sandbox: TelegramSandbox, redis: RedisServer, workdir: Path, *, rounds: int,
            updates: int, profile: Path | None = None, baseline: Path | None = None,
            done_one: Callable[[int, Round], None] | None = None) -> list[Round]:
    """`rounds` rounds on one sandbox and one Redis, each starting every bot in turn (the
    first of the order moves on by one each round) and timing `updates` users' `/start`
    to it. Each bot is stopped before the next starts. `done_one(n, round)` is told of
    each round as it ends."""
    assert redis.proc is not None and sandbox.proc is not None
    others = {"sandbox": sandbox.proc.pid, "redis": redis.proc.pid}
    done: list[Round] = []
    for round_ in range(rounds):
        order = [BARE, PRODUCT] + ([BASELINE] if baseline is not None else [])
        this = Round(order[round_ % len(order):] + order[:round_ % len(order)])
        for n, module in enumerate(this.order):
            if module == BASELINE:
                assert baseline is not None
                bot, token = _start_baseline(baseline, sandbox, redis.url, workdir)
            else:
                env = PRODUCT_ENV if module == PRODUCT else {}
                bot, token = start_bot(module, sandbox, redis.url, workdir, **env)
            spy = None
            if profile is not None:
                spy = _record(bot.proc.pid, profile / f"{module}-{round_ + 1}.txt")
            try:
                first = 100_000_000 + round_ * 1_000_000 + n * 100_000
                pids = {"bot": bot.proc.pid, **others}
                before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                this.rates[module] = measure.bot_replies_per_s(sandbox, token, first, updates)
                replies = updates + 50  # and the warm-up's
                this.cpu[module] = {
                    name: (_cpu_seconds(pid) - before[name]) * 1000 / replies
                    for name, pid in pids.items()}
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                bot.stop()
                if spy is not None:
                    spy.wait(30)
        done.append(this)
        if done_one is not None:
            done_one(len(done), this)
    return done


def _print_round(n: int, this: Round) -> None:
    rates = this.rates
    line = (f"round {n}: bare {rates[BARE]:.1f}/s  "
            f"product {rates[PRODUCT]:.1f}/s  ratio {this.ratio:.3f}")
    if BASELINE in rates:
        line += f"  baseline {rates[BASELINE]:.1f}/s  ratio {rates[BASELINE] / rates[BARE]:.3f}"
    print(f"{line}  (first: {this.order[0]})", flush=True)
    for module in this.order:
        spent = " ".join(f"{name} {ms:.2f}" for name, ms in this.cpu[module].items())
        print(f"    CPU ms per reply, {module}: {spent}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bot", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=1_500)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        workdir = Path(tmp)
        redis = start_redis(workdir)
        stack.callback(redis.stop)
        sandbox = start_sandbox(workdir)
        stack.callback(sandbox.stop)
        done = compare(sandbox, redis, workdir, rounds=args.rounds, updates=args.updates,
                       profile=args.profile, baseline=args.baseline, done_one=_print_round)
    print(f"median ratio {statistics.median(r.ratio for r in done):.3f} over {len(done)} rounds")


if __name__ == "__main__":
    main()
