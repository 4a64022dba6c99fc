"""Auto-pipelining in shared.redis: what concurrent callers issue in one event-loop tick
goes to Redis as one pipeline, and each caller still sees only its own answers, its own
errors and its own deadline; transactions and blocking commands stay out of batches.
On a real server, one stopped with SIGSTOP, and behind a proxy counting round trips."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from shared.redis import Unavailable, connect, scripts, unavailable_on_error
from tests.fixtures.redis import RedisServer
from tests.fixtures.turns import TurnCounter
from tests.shared.test_redis_layer import BOUND, settings_for

CALLERS = 200  # more than the pool's 64 connections


def test_concurrent_callers_get_their_own_answers_and_their_own_errors(redis_url: str) -> None:
    """200 callers at once: single commands, pipelines with a script, and pipelines whose
    second command meets a key of the wrong type. Every caller's answers are its own; a
    WRONGTYPE fails only the caller that sent it, numbered within its own pipeline."""

    async def body() -> None:
        client = connect(settings_for(redis_url))
        lease = scripts(client).get("lease.lua")
        try:
            await client.rpush("a-list", "x")

            async def single(n: int) -> Any:
                await client.set(f"k{n}", f"v{n}")
                return await client.get(f"k{n}")

            async def piped(n: int) -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.incrby(f"n{n}", n)
                    await lease(keys=[f"{{b{n}}}:lease"], args=[f"me{n}", 10_000], client=pipe)
                    pipe.get(f"{{b{n}}}:lease")
                    return await pipe.execute()

            async def wrong(n: int) -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.incr(f"w{n}")
                    pipe.incr("a-list")  # WRONGTYPE
                    pipe.incr(f"w{n}")
                    if n % 2:
                        return await pipe.execute(raise_on_error=False)
                    with pytest.raises(ResponseError, match=r"Command # 2 .*WRONGTYPE"):
                        await pipe.execute()
                    return "raised"

            async def wrong_single(n: int) -> Any:
                with pytest.raises(ResponseError, match="WRONGTYPE"):
                    await client.incr("a-list")
                return "raised"

            kinds = [single, piped, wrong, wrong_single]
            answers = await asyncio.gather(*(kinds[n % 4](n) for n in range(CALLERS)))
            for n, answer in enumerate(answers):
                kind = kinds[n % 4]
                if kind is single:
                    assert answer == f"v{n}"
                elif kind is piped:
                    assert answer == [n, 1, f"me{n}"]
                elif kind is wrong and n % 2:
                    first, error, second = answer
                    assert (first, second) == (1, 2)
                    assert isinstance(error, ResponseError)
                    assert "WRONGTYPE" in str(error)
                else:
                    assert answer == "raised"
            assert await client.lrange("a-list", 0, -1) == ["x"]
        finally:
            await client.aclose()

    asyncio.run(body())


def test_scripts_reload_in_a_batch_after_the_server_lost_them(redis_url: str) -> None:
    """A script called by itself goes as EVALSHA; 100 such calls at once after SCRIPT
    FLUSH each get NOSCRIPT in the batch, load the script and run once."""

    async def body() -> None:
        client = connect(settings_for(redis_url))
        lease = scripts(client).get("lease.lua")
        try:
            assert await lease(keys=["{b0}:lease"], args=["me", 10_000]) == 1
            await client.script_flush()
            won = await asyncio.gather(
                *(lease(keys=[f"{{b{n}}}:lease"], args=["me", 10_000]) for n in range(100))
            )
            assert won == [1] + [1] * 99  # b0 is held by "me" already: 1 again
            assert await client.get("{b99}:lease") == "me"
        finally:
            await client.aclose()

    asyncio.run(body())


def test_a_batch_sends_scripts_by_sha_loading_each_once_per_connection(
    redis_url: str,
) -> None:
    """Pipelines queue a script with its text; a batch sends it as EVALSHA, after one
    SCRIPT LOAD per connection: 2 x 200 concurrent pipelines make 400 EVALSHA, no EVAL,
    and at most one load per connection the pool opened."""

    async def body() -> tuple[dict[str, Any], int]:
        client = connect(settings_for(redis_url))
        admin = connect(settings_for(redis_url), batched=False)
        lease = scripts(client).get("lease.lua")
        try:
            await client.config_resetstat()

            async def piped(n: int) -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    await lease(keys=[f"{{s{n}}}:lease"], args=[f"me{n}", 10_000], client=pipe)
                    pipe.get(f"{{s{n}}}:lease")
                    return await pipe.execute()

            for _ in range(2):
                got = await asyncio.gather(*(piped(n) for n in range(200)))
                assert got == [[1, f"me{n}"] for n in range(200)]
            stats: dict[str, Any] = await admin.info("commandstats")
            # the batching client's connections (the admin's one aside)
            opened = len(await admin.client_list()) - 1
            return stats, opened
        finally:
            await client.aclose()
            await admin.aclose()

    stats, opened = asyncio.run(body())
    assert stats["cmdstat_evalsha"]["calls"] == 400, stats
    assert "cmdstat_eval" not in stats, stats
    loads = stats.get("cmdstat_script|load", stats.get("cmdstat_script", {})).get("calls", 0)
    assert 1 <= loads <= opened, (loads, opened)


def test_after_script_flush_one_batch_fails_and_the_next_loads_again(redis_url: str) -> None:
    """SCRIPT FLUSH under a connected client: the batch that meets it gets NOSCRIPT for its
    script (its caller's error: a 503 at the API), and the next batch loads the script
    again and runs it."""

    async def body() -> None:
        client = connect(settings_for(redis_url))
        lease = scripts(client).get("lease.lua")

        async def piped(n: int) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                await lease(keys=[f"{{f{n}}}:lease"], args=["me", 10_000], client=pipe)
                return await pipe.execute()

        try:
            assert await piped(0) == [1]
            await client.script_flush()
            with pytest.raises(NoScriptError):
                await piped(1)  # the same pooled connection, which had loaded it
            assert await client.get("{f1}:lease") is None  # it did not run
            assert await asyncio.gather(*(piped(n) for n in range(2, 50))) == [[1]] * 48
            assert await client.get("{f49}:lease") == "me"
        finally:
            await client.aclose()

    asyncio.run(body())


def test_concurrent_commands_share_round_trips_and_a_connection(
    redis_server: RedisServer, redis_url: str
) -> None:
    """64 GETs at once: one round trip on one connection when batched; 64 round trips on
    as many connections without batching (so the counter sees what it should)."""

    async def body() -> dict[bool, tuple[int, int]]:
        proxy = TurnCounter(redis_server.port)
        url = f"redis://127.0.0.1:{await proxy.start()}/0"
        seen: dict[bool, tuple[int, int]] = {}
        try:
            for batched in (True, False):
                client = connect(settings_for(url), batched=batched)
                try:
                    await client.set("k", "v")  # a connection open before counting
                    turns, connections = proxy.turns, proxy.connections
                    got = await asyncio.gather(*(client.get("k") for _ in range(64)))
                    assert got == ["v"] * 64
                    seen[batched] = (proxy.turns - turns, proxy.connections - connections)
                finally:
                    await client.aclose()
        finally:
            await proxy.close()
        return seen

    seen = asyncio.run(body())
    assert seen[True] == (1, 0), seen
    turns, connections = seen[False]
    assert turns >= 64 and connections >= 32, seen


def test_transactions_and_blocking_commands_stay_out_of_batches(redis_url: str) -> None:
    """A BLPOP waiting for a push does not hold up the commands issued beside it, and a
    MULTI/EXEC pipeline stays one atomic transaction among batched traffic."""

    async def body() -> None:
        client = connect(settings_for(redis_url))
        try:
            waiting = asyncio.ensure_future(client.blpop(["queue"], 0))
            got = await asyncio.wait_for(
                asyncio.gather(*(client.incr("count") for _ in range(64))), 10
            )
            assert sorted(got) == list(range(1, 65))
            assert not waiting.done()

            async def transaction() -> list[Any]:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.incr("t")
                    pipe.incr("t")
                    return await pipe.execute()

            counted = await asyncio.gather(*(transaction() for _ in range(50)))
            # each transaction's two increments are adjacent: no other came between
            assert sorted(second for _, second in counted) == list(range(2, 101, 2))
            assert all(second == first + 1 for first, second in counted)

            await client.rpush("queue", "item")
            assert tuple(await asyncio.wait_for(waiting, 10)) == ("queue", "item")
        finally:
            await client.aclose()

    asyncio.run(body())


def test_a_stalled_server_fails_every_batched_caller_within_its_deadline(
    own_server: RedisServer,
) -> None:
    """SIGSTOP: callers joining batches over one and a half seconds (later ones while
    earlier batches hang) each fail within the deadline counted from their own call;
    after SIGCONT, concurrent callers of the same client get their own answers (no late
    answer of an abandoned batch is read as another's)."""
    settings = settings_for(own_server.url)
    assert own_server.proc is not None

    async def body() -> None:
        client = connect(settings)
        lease = scripts(client).get("lease.lua")

        async def call(n: int) -> tuple[str, float]:
            await asyncio.sleep(n * 0.0075)  # staggered starts, the stall already on
            started = time.monotonic()
            try:
                with unavailable_on_error():
                    if n % 2:
                        await client.set(f"k{n}", n)
                    else:
                        async with client.pipeline(transaction=False) as pipe:
                            pipe.set(f"k{n}", n)
                            await lease(keys=[f"{{b{n}}}:lease"], args=["me", 10_000], client=pipe)
                            await pipe.execute()
            except Unavailable as exc:
                return str(exc), time.monotonic() - started
            return "ok", time.monotonic() - started

        try:
            await client.set("warm", 1)
            assert own_server.proc is not None
            own_server.proc.send_signal(signal.SIGSTOP)
            try:
                ended = await asyncio.gather(*(call(n) for n in range(CALLERS)))
            finally:
                own_server.proc.send_signal(signal.SIGCONT)
            assert all(outcome != "ok" for outcome, _ in ended), ended
            slowest = max(took for _, took in ended)
            assert slowest < BOUND, f"a caller waited {slowest:.1f} s"

            async def own(n: int) -> None:
                await client.set(f"own{n}", n)
                assert await client.get(f"own{n}") == str(n)

            await asyncio.gather(*(own(n) for n in range(CALLERS)))
        finally:
            await client.aclose()

    asyncio.run(body())


def test_closing_a_client_lets_its_batched_callers_have_their_answers(redis_url: str) -> None:
    """Callers whose batch is queued or on its way when the client closes get their
    answers, and the client leaves no connection open."""

    async def body() -> None:
        client: Redis = connect(settings_for(redis_url))
        await client.set("k", "v")
        sent = [asyncio.ensure_future(client.get("k")) for _ in range(20)]
        await asyncio.sleep(0)  # their batch formed and on its way
        queued = [asyncio.ensure_future(client.get("k")) for _ in range(20)]
        await asyncio.sleep(0)  # queued for the next turn of the loop
        await client.aclose()
        assert await asyncio.wait_for(asyncio.gather(*sent, *queued), 10) == ["v"] * 40

    asyncio.run(body())


def test_a_failing_answer_callback_fails_its_caller_only_and_leaves_no_answer_behind(
    redis_url: str,
) -> None:
    """An answer's callback that raises is that caller's error: the rest of the batch's
    answers are still read, so the next batch on the connection reads its own."""

    async def body() -> None:
        client = connect(settings_for(redis_url))
        client.set_response_callback("GET", lambda answer: int(answer) if answer else answer)
        try:
            await client.set("number", "7")
            await client.set("word", "seven")

            async def number(n: int) -> Any:
                return await client.get("number")

            async def word(n: int) -> Any:
                with pytest.raises(ValueError):
                    await client.get("word")
                return "raised"

            for _ in range(3):  # later batches run on the same connections
                found = await asyncio.gather(*(word(n) if n % 3 == 0 else number(n)
                                               for n in range(90)))
                assert found == ["raised" if n % 3 == 0 else 7 for n in range(90)]
        finally:
            await client.aclose()

    asyncio.run(body())
