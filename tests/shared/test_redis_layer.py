"""shared.redis, the one Redis layer: every call bounded by REDIS_TIMEOUT, every failure
`Unavailable`, scripts registered once, pub/sub that notices a silent server; on a real
server, a real server stopped with SIGSTOP, and a real Cluster."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.redis import Subscriber, Unavailable, connect, ping, scripts, unavailable_on_error
from shared.settings import Settings, load_settings
from tests.fixtures.common import free_port
from tests.fixtures.redis import ClusterSet, RedisServer, SentinelSet, kill, start_cluster

SECRET = "r" * 40
TIMEOUT = 1  # REDIS_TIMEOUT here, so a stalled call costs a second
# what a stalled call may take at most: the deadline, and room for a busy machine
BOUND = TIMEOUT + 5.0


def settings_for(redis_url: str, **env: str) -> Settings:
    return load_settings(
        env={"AUTH_SECRET": SECRET, "REDIS_URL": redis_url, "REDIS_TIMEOUT": str(TIMEOUT), **env},
        env_file="/nonexistent",
    )


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
    """How `call` ended ("ok" or the Unavailable message) and how long it took."""
    started = time.monotonic()
    try:
        with unavailable_on_error():
            await call()
    except Unavailable as exc:
        return str(exc), time.monotonic() - started
    return "ok", time.monotonic() - started


def test_scripts_are_registered_once_and_survive_a_flushed_cache(redis_url: str) -> None:
    async def body() -> None:
        client = connect(settings_for(redis_url))
        try:
            registry = scripts(client)
            assert scripts(client) is registry
            lease = registry.get("lease.lua")
            assert registry.get("lease.lua") is lease
            assert await lease(keys=["{b1}:lease"], args=["me", 10_000]) == 1
            await client.script_flush()  # as a restarted or promoted server has none
            assert await lease(keys=["{b1}:lease"], args=["me", 10_000]) == 1
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("{b1}:lease")
                await lease(keys=["{b1}:lease"], args=["other", 10_000], client=pipe)
                assert await pipe.execute() == ["me", 0]
        finally:
            await client.aclose()

    asyncio.run(body())


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_no_server_is_unavailable(where: str, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0" if where == "tcp" else f"unix://{tmp_path}/no.sock"

    async def body() -> None:
        client = connect(settings_for(url))
        try:
            outcome, _ = await timed(lambda: client.get("k"))
            assert outcome != "ok"
            with pytest.raises(Unavailable):
                await ping(client)
        finally:
            await client.aclose()

    asyncio.run(body())


def test_a_stalled_server_costs_each_call_the_deadline_and_no_more(
    own_server: RedisServer,
) -> None:
    """SIGSTOP: the server accepts connections and never answers. Commands, pipelines and
    scripts, 200 at once (more than the pool's 64 connections), each fail within the
    deadline; once it resumes, the same client works."""
    settings = settings_for(own_server.url)
    assert own_server.proc is not None

    async def body() -> None:
        client = connect(settings)
        lease = scripts(client).get("lease.lua")

        async def piped() -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.incr("n")
                await lease(keys=["{b1}:lease"], args=["me", 10_000], client=pipe)
                await pipe.execute()

        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.get("k"),
            piped,
            lambda: lease(keys=["{b1}:lease"], args=["me", 10_000]),
            lambda: ping(client),
        ]
        try:
            assert all(o == "ok" for o, _ in await asyncio.gather(*(timed(c) for c in calls)))
            assert own_server.proc is not None
            own_server.proc.send_signal(signal.SIGSTOP)
            try:
                for _ in range(2):  # fresh connections, then the ones the first round left
                    ended = await asyncio.gather(*(timed(calls[n % 4]) for n in range(200)))
                    assert all(outcome != "ok" for outcome, _ in ended)
                    slowest = max(took for _, took in ended)
                    assert slowest < BOUND, f"a call took {slowest:.1f} s"
            finally:
                own_server.proc.send_signal(signal.SIGCONT)
            ended = await asyncio.gather(*(timed(calls[n % 4]) for n in range(200)))
            assert {outcome for outcome, _ in ended} == {"ok"}
        finally:
            await client.aclose()

    asyncio.run(body())


def test_a_subscription_notices_a_stalled_server_and_comes_back(
    own_server: RedisServer,
) -> None:
    settings = settings_for(own_server.url)
    assert own_server.proc is not None

    async def body() -> None:
        subscriber = Subscriber(settings)
        with redis.Redis(port=own_server.port) as publisher:
            async with aclosing(subscriber.listen("chan")) as feed:
                assert await anext(feed) is None
                publisher.publish("chan", "one")
                assert await asyncio.wait_for(anext(feed), 10) == "one"
                assert own_server.proc is not None
                own_server.proc.send_signal(signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    with pytest.raises(Unavailable, match="no answer"):
                        await asyncio.wait_for(anext(feed), 30)
                    # quiet for a ping's interval, then the ping's deadline
                    assert time.monotonic() - started < BOUND + 1
                finally:
                    own_server.proc.send_signal(signal.SIGCONT)
            async with aclosing(subscriber.listen("chan")) as feed:
                assert await anext(feed) is None
                publisher.publish("chan", "two")
                assert await asyncio.wait_for(anext(feed), 10) == "two"

    asyncio.run(body())


# -- Sentinel ---------------------------------------------------------------------------------


def test_sentinel_bursts_wait_their_turn_and_pub_sub_is_the_masters(
    sentinel_set: SentinelSet,
) -> None:
    """Through the sentinels: 300 calls at once share the 64 connections (none refused),
    and a subscription hears what is published on the master."""
    env = dict(sentinel_set.env)
    settings = settings_for(env.pop("REDIS_URL"), **env)

    async def body() -> None:
        client = connect(settings)
        try:
            ended = await asyncio.gather(*(timed(lambda: client.incr("n")) for _ in range(300)))
            assert {outcome for outcome, _ in ended} == {"ok"}
            assert await client.get("n") == "300"
            async with aclosing(Subscriber(settings).listen("chan")) as feed:
                assert await anext(feed) is None
                await client.publish("chan", "hello")
                assert await asyncio.wait_for(anext(feed), 10) == "hello"
        finally:
            await client.aclose()

    asyncio.run(body())
    with sentinel_set.master.client() as master:
        assert master.get("n") == "300"  # the master it was


# -- a real Cluster --------------------------------------------------------------------------


def test_cluster_pipelines_keep_their_queue_and_run_scripts(cluster_env: dict[str, str]) -> None:
    """redis-py refuses EVALSHA in a Cluster pipeline and empties the queue when one is
    awaited; the layer's pipeline runs a registered script (as EVAL) among commands of
    other slots, on every node, even with the nodes' script caches empty."""
    settings = settings_for(cluster_env["REDIS_URL"], REDIS_CLUSTER="1")

    async def body() -> None:
        client = connect(settings)
        try:
            await ping(client)
            await client.script_flush()
            lease = scripts(client).get("lease.lua")
            async with client.pipeline(transaction=False) as pipe:
                for bot in range(12):  # tags spread over all three masters
                    pipe.set(f"plain{bot}", bot)
                    await lease(keys=[f"{{b{bot}}}:lease"], args=["me", 10_000], client=pipe)
                assert await pipe.execute() == [True, 1] * 12
            assert await lease(keys=["{b3}:lease"], args=["other", 10_000]) == 0
            assert await client.get("plain11") == "11"
        finally:
            await client.aclose()

    asyncio.run(body())


def test_a_cluster_burst_waits_its_turn(cluster_env: dict[str, str]) -> None:
    """300 calls at once on a new client, each holding its connection a while: redis-py's
    Cluster client alone fails some (no connection to spare, or one closed under a call
    while it maps the cluster); through the layer they wait their turn and all succeed."""
    settings = settings_for(cluster_env["REDIS_URL"], REDIS_CLUSTER="1")

    async def body() -> None:
        client = connect(settings)
        try:
            ended = await asyncio.gather(
                *(timed(lambda: client.blpop(["{q}empty"], 0.05)) for _ in range(300))
            )
            assert {outcome for outcome, _ in ended} == {"ok"}
        finally:
            await client.aclose()

    asyncio.run(body())


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    """A cluster of this test's own, whose nodes it may kill."""
    cluster = start_cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_cluster_subscription_moves_to_another_node(own_cluster: ClusterSet) -> None:
    """PUBLISH reaches every node: the subscriber listens on the node REDIS_URL names and,
    once that node is gone, on another one it learned of."""
    settings = settings_for(own_cluster.url, REDIS_CLUSTER="1")
    first, survivor = own_cluster.masters[0], own_cluster.masters[2]

    async def body() -> None:
        subscriber = Subscriber(settings)
        with redis.Redis(port=survivor.port) as publisher:
            async with aclosing(subscriber.listen("chan")) as feed:
                assert await anext(feed) is None
                publisher.publish("chan", "before")
                assert await asyncio.wait_for(anext(feed), 10) == "before"
                kill(first)
                with pytest.raises(Unavailable):
                    await asyncio.wait_for(anext(feed), 30)
            heard = None
            for _ in range(len(own_cluster.masters)):  # as the API's listener tries again
                try:
                    async with aclosing(subscriber.listen("chan")) as feed:
                        assert await anext(feed) is None
                        publisher.publish("chan", "after")
                        heard = await asyncio.wait_for(anext(feed), 10)
                        break
                except Unavailable:
                    continue
            assert heard == "after"

    asyncio.run(body())
