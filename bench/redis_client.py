"""CPU the client spends per Redis command: `python -m bench.redis_client`.

Against a private server, 64 concurrent callers each send single commands, or
pipelines of 4 (INCR, EXPIRE, GET and a script as EVAL, as tglogin's operations do),
through shared.redis's client: with redis-py's pure-Python parser and packer or
hiredis's, with auto-pipelining off or on, with or without a socket timeout on each read
(the layer before auto-pipelining had one: hiredis off, batching off, read timeouts on).
One redis-py pipeline of 64 commands is the reference. The
figure is the client process's CPU time (`time.process_time`, the server is another
process) divided by the commands sent; each configuration runs `--repeat` times,
interleaved with the others, and the median counts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
from redis.asyncio import Redis

from bench.services import start_redis
from shared.redis import _pack_with_hiredis, connect
from shared.settings import load_settings

CALLERS = 64
SCRIPT = "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])"
PARSERS = {"python": _AsyncRESP2Parser, "hiredis": _AsyncHiredisParser}


@dataclass(frozen=True)
class Config:
    label: str
    parser: str  # and packer
    batched: bool
    read_timeouts: bool


CONFIGS = [
    Config("before", "python", False, True),
    Config("hiredis", "hiredis", False, True),
    Config("batched", "python", True, False),
    Config("hiredis+batch", "hiredis", True, True),
    Config("after", "hiredis", True, False),
]


def client_for(url: str, config: Config) -> Redis:
    settings = load_settings(
        env={"AUTH_SECRET": "b" * 40, "REDIS_URL": url}, env_file="/nonexistent"
    )
    client = connect(settings, batched=config.batched)
    # before the pool has opened a connection: every one is made so
    pool = client.connection_pool
    pool.connection_kwargs["parser_class"] = PARSERS[config.parser]
    if config.parser == "python" and pool.connection_class.pack_command is _pack_with_hiredis:
        pool.connection_class = pool.connection_class.__bases__[0]
    if config.read_timeouts:
        pool.connection_kwargs["socket_timeout"] = settings.redis_timeout
    return client


async def singles(client: Redis, rounds: int) -> int:
    async def caller(n: int) -> None:
        for _ in range(rounds):
            await client.incr(f"bench:{n}")

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return CALLERS * rounds


async def pipelines(client: Redis, rounds: int) -> int:
    script = client.register_script(SCRIPT)

    async def caller(n: int) -> None:
        for _ in range(rounds):
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr(f"bench:{n}")
                pipe.expire(f"bench:{n}", 60)
                pipe.get(f"bench:{n}")
                await script(keys=[f"bench:s{n}"], client=pipe)
                await pipe.execute()

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return CALLERS * rounds * 4


async def one_pipeline(client: Redis, rounds: int) -> int:
    for _ in range(rounds):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(CALLERS):
                pipe.incr(f"bench:{n}")
            await pipe.execute()
    return CALLERS * rounds


Workload = Callable[[Redis, int], Awaitable[int]]


async def measure(url: str, config: Config, work: Workload, rounds: int) -> float:
    """µs of client CPU per command."""
    client = client_for(url, config)
    try:
        await work(client, max(1, rounds // 10))  # connections open, scripts cached
        started = time.process_time()
        commands = await work(client, rounds)
        return (time.process_time() - started) / commands * 1e6
    finally:
        await client.aclose()


CASES: list[tuple[str, Workload, int]] = [
    ("single commands, 64 concurrent", singles, 60),
    ("pipelines of 4, 64 concurrent", pipelines, 30),
    ("one pipeline of 64 (reference)", one_pipeline, 60),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="rounds multiplier")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis(Path(workdir))
        try:
            run(server.url, options.repeat, options.scale)
        finally:
            server.stop()


def run(url: str, repeat: int, scale: float) -> None:
    print(f"µs of client CPU per command (median of {repeat}), {CALLERS} callers")
    for config in CONFIGS:
        print(
            f"  {config.label}: {config.parser} parser and packer, batching "
            f"{'on' if config.batched else 'off'}, read timeouts "
            f"{'on' if config.read_timeouts else 'off'}"
        )
    print(f"{'':34}" + "".join(f"{c.label:>15}" for c in CONFIGS))
    for name, work, rounds in CASES:
        samples: dict[Config, list[float]] = {c: [] for c in CONFIGS}
        for _ in range(repeat):
            for config in CONFIGS:
                if work is one_pipeline and config.batched:
                    continue  # one caller: nothing to batch with
                samples[config].append(asyncio.run(measure(url, config, work, int(rounds * scale))))
        cells = "".join(
            f"{statistics.median(samples[c]):>15.1f}" if samples[c] else f"{'-':>15}"
            for c in CONFIGS
        )
        print(f"{name:34}{cells}")


if __name__ == "__main__":
    main()
