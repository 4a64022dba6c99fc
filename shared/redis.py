"""The one way tglogin reaches Redis: a single server, Sentinel or a Cluster.

Rules of this module:
- `connect(settings)` is the data client every operation takes; `Subscriber` is the
  pub/sub side. Both follow the same settings: REDIS_URL alone (`redis://`,
  `rediss://`, `unix://`), REDIS_SENTINELS + REDIS_SENTINEL_MASTER (REDIS_URL then
  gives only the database, password and TLS options) or REDIS_CLUSTER=1 (REDIS_URL
  names one node).
- Every command, pipeline and script call on a client from here answers within
  REDIS_TIMEOUT seconds, however Redis fails: waiting for a pooled connection,
  connecting, at most one reconnect after a broken connection and reading the answer
  all count against that one deadline. A Redis that accepts connections and never
  answers (stopped, swapping, partitioned) costs a caller REDIS_TIMEOUT, never more.
- Every Redis failure becomes `Unavailable` in one place, `unavailable_on_error()`.
- Lua scripts are package data in shared/lua/, registered once per client:
  `scripts(client).get("lease.lua")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncGenerator, Awaitable, Generator, Iterator
from importlib import resources
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.settings import Settings

T = TypeVar("T")

# connections one process keeps to one server; a burst beyond waits its turn (within
# the deadline) instead of opening more
MAX_CONNECTIONS = 64
# an idle pooled connection is pinged before use after this long (s)
HEALTH_CHECK_SECONDS = 15
# a subscription quiet this long (s) is pinged; no pong within half of REDIS_TIMEOUT:
# lost (so a held poll woken by the loss still answers within REDIS_TIMEOUT)
PING_EVERY = 1.0


class Unavailable(Exception):
    """Redis cannot be reached (or answered with an error) right now."""


_FAILURES = (RedisError, OSError)


@contextlib.contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turn any Redis failure inside the block into `Unavailable`."""
    try:
        yield
    except _FAILURES as exc:
        raise Unavailable(str(exc) or type(exc).__name__) from exc


async def _bounded(seconds: float, work: Awaitable[T]) -> T:
    """What `work` gives, or a Redis TimeoutError after `seconds`.

    `work` runs as a task of its own, cancelled at the deadline and left to wind down:
    however redis-py handles the cancellation, the caller waits no longer. (Cancelled
    in place, a call whose socket timeout fired at the same moment went on for a second
    deadline.)
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():  # the deadline, or the caller cancelled
            task.cancel()
            task.add_done_callback(_retrieve)
    if task not in done:
        raise RedisTimeoutError(f"no answer from Redis within {seconds:g} s")
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


# -- scripts -------------------------------------------------------------------------------


@functools.cache
def load_script(name: str) -> str:
    """A Lua script shipped in shared/lua/."""
    return resources.files("shared").joinpath("lua", name).read_text()


# every script registered on a Cluster client, by its SHA1, so a pipeline can send it whole
_BODIES: dict[str, str] = {}
_REGISTRY = "_tglogin_scripts"


class Scripts:
    """The Lua scripts of one client, each registered once.

    A script runs as EVALSHA and is loaded again by itself after a NOSCRIPT (a
    restarted or promoted server). Queued on a pipeline (`await script(keys=...,
    args=..., client=pipe)`) it works on a single server, Sentinel and Cluster alike.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._registered: dict[str, AsyncScript] = {}

    def get(self, name: str) -> AsyncScript:
        script = self._registered.get(name)
        if script is None:
            script = self._registered[name] = self._client.register_script(load_script(name))
        return script


def scripts(client: Redis) -> Scripts:
    """The script registry of `client` (made on first use)."""
    registry = getattr(client, _REGISTRY, None)
    if not isinstance(registry, Scripts):
        registry = Scripts(client)
        setattr(client, _REGISTRY, registry)
    return registry


# -- clients whose every call has a deadline ---------------------------------------------------


class _Bounded(Redis):
    """A client (single server or Sentinel-managed) with a deadline on every call."""

    deadline: float = 5.0
    sentinel_manager: Sentinel | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _bounded(self.deadline, call)

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered = super().register_script(script)
        _BODIES[registered.sha] = script  # for this client's pipelines
        return registered

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _BoundedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.deadline = self.deadline
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


class _BoundedPipeline(Pipeline):
    """A pipeline with the client's deadline, whose registered scripts go as EVAL with
    their text: redis-py otherwise asks `SCRIPT EXISTS` before every pipeline that holds
    a script, one more round trip each time, and no server can answer NOSCRIPT."""

    deadline: float = 5.0

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        body = _BODIES.get(sha)
        if body is None:
            return super().evalsha(sha, numkeys, *keys_and_args)
        return self.execute_command("EVAL", body, numkeys, *keys_and_args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self.scripts = {s for s in self.scripts if s.sha not in _BODIES}
        return await _bounded(self.deadline, super().execute(raise_on_error))


class _BoundedCluster(RedisCluster):
    """A Cluster client with a deadline on every call; a cluster that cannot serve a
    slot (no node reachable, a slot uncovered) fails as a ConnectionError.

    At most MAX_CONNECTIONS calls are in flight, the rest wait their turn (within the
    deadline), as on a single server's blocking pool: redis-py's Cluster client has no
    such pool, and past `max_connections` fails a call at once.
    """

    deadline: float = 5.0
    _turns: asyncio.Semaphore | None = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        call = super().execute_command(*args, **kwargs)
        return await _bounded(self.deadline, self.in_turn(call))

    async def in_turn(self, work: Awaitable[T]) -> T:
        """`work` once a turn is free (nested calls take none); a slot no reachable node
        serves, or a connection redis-py closed under the call, fail as ConnectionError."""
        if _IN_TURN.get():
            return await _uncovered(work)
        if self._turns is None:
            self._turns = asyncio.Semaphore(MAX_CONNECTIONS)
        # learn the cluster's map before any call goes out: redis-py, mapping it on the
        # first call while others are in flight, closes their connections under them
        await _uncovered(self.initialize())
        async with self._turns:
            _IN_TURN.set(True)
            return await _uncovered(work)

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:  # no node reachable, slots not covered, ...
            raise RedisConnectionError(str(exc)) from exc

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered = super().register_script(script)
        _BODIES[registered.sha] = script  # for this client's pipelines
        return registered

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if transaction or shard_hint:  # never used: keep redis-py's own refusal
            return super().pipeline(transaction, shard_hint)
        return _BoundedClusterPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedClusterPipeline(ClusterPipeline):
    """redis-py's Cluster pipeline, made to run scripts as a single server's does.

    redis-py 8.1 refuses EVALSHA in a Cluster pipeline, and awaiting one empties its
    queue: `await script(keys=..., args=..., client=pipe)` fails, and would drop what
    was queued before. Here a registered script is queued as EVAL with its text (so no
    node can answer NOSCRIPT), and awaiting keeps the queue.
    """

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> ClusterPipeline:
        body = _BODIES.get(sha)
        if body is None:
            raise RedisClusterException("a script must be registered on the client first")
        return self.execute_command("EVAL", body, numkeys, *keys_and_args)

    def __await__(self) -> Generator[Any, None, ClusterPipeline]:
        return self._itself().__await__()

    async def _itself(self) -> ClusterPipeline:
        return self

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = cast(_BoundedCluster, self.cluster_client)
        call = super().execute(raise_on_error, allow_redirections)
        return await _bounded(client.deadline, client.in_turn(call))


# set in the task of a Cluster call holding a turn (calls it makes take none)
_IN_TURN: contextvars.ContextVar[bool] = contextvars.ContextVar("in_turn", default=False)


async def _uncovered(work: Awaitable[T]) -> T:
    try:
        return await work
    except SlotNotCoveredError as exc:
        raise RedisConnectionError(str(exc)) from exc
    except AttributeError as exc:  # redis-py closed the connection under this call
        raise RedisConnectionError(f"connection closed during the call: {exc}") from exc


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master pool, where a burst waits for a connection as on one server."""


# -- connecting ----------------------------------------------------------------------------


def _url_options(settings: Settings, *, where: bool = True) -> dict[str, Any]:
    """What REDIS_URL says, as connection options; without `where` (for Sentinel and
    Cluster, which find their servers) only the database, credentials, TLS and query
    options."""
    options: dict[str, Any] = dict(parse_url(settings.redis_url))
    if not where:
        for name in ("host", "port", "path"):
            options.pop(name, None)
        if options.pop("connection_class", None) is SSLConnection:
            options["ssl"] = True
    return options


def _timeouts(settings: Settings, *, retries: int) -> dict[str, Any]:
    """Socket options of every connection: REDIS_TIMEOUT for connecting and each read;
    `retries` reconnects after a broken connection (never after a timeout)."""
    return {
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
    }


def _sentinel(settings: Settings) -> Sentinel:
    options = _url_options(settings, where=False)
    ssl = options.get("ssl", False)
    # one silent sentinel must not use up the whole deadline of finding the master
    ask = max(0.2, settings.redis_timeout / 4)
    return Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels),
        sentinel_kwargs={"socket_timeout": ask, "socket_connect_timeout": ask, "ssl": ssl},
        **options,
    )


def _node(settings: Settings) -> tuple[str, int]:
    """The host and port REDIS_URL names."""
    options = parse_url(settings.redis_url)
    return str(options.get("host", "127.0.0.1")), int(options.get("port", 6379))


def connect(settings: Settings) -> Redis:
    """The data client for `settings`. Every call answers within REDIS_TIMEOUT.

    A Cluster client is a `redis.asyncio.cluster.RedisCluster`: the commands, pipelines
    (non-transactional) and scripts tglogin uses behave alike on it, so callers see
    one `Redis` type.
    """
    timeouts = _timeouts(settings, retries=1)
    if settings.redis_cluster:
        host, port = _node(settings)
        options = {**_url_options(settings, where=False), **timeouts}
        options.pop("db", None)
        # MOVED, ASK, a node lost: try again (with the new map) while time is left
        options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)
        cluster = _BoundedCluster(
            host=host,
            port=port,
            **options,
            health_check_interval=HEALTH_CHECK_SECONDS,
            # calls wait for one of MAX_CONNECTIONS turns; room for the calls they make
            max_connections=2 * MAX_CONNECTIONS,
        )
        cluster.deadline = settings.redis_timeout
        return cast(Redis, cluster)
    if settings.redis_sentinels:
        sentinel = _sentinel(settings)
        client = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=_Bounded,
            connection_pool_class=_BlockingSentinelPool,
            health_check_interval=HEALTH_CHECK_SECONDS,
            max_connections=MAX_CONNECTIONS,
            timeout=settings.redis_timeout,
            **timeouts,
        )
        assert isinstance(client, _Bounded)
        client.sentinel_manager = sentinel
    else:
        # a blocking pool lets a burst wait for a connection instead of failing it
        pool = BlockingConnectionPool(
            **{**_url_options(settings), **timeouts},
            health_check_interval=HEALTH_CHECK_SECONDS,
            max_connections=MAX_CONNECTIONS,
            timeout=settings.redis_timeout,
        )
        client = _Bounded.from_pool(pool)
        assert isinstance(client, _Bounded)
    client.deadline = settings.redis_timeout
    return client


async def ping(client: Redis) -> None:
    """Redis answers: a single server or Sentinel's master, or every Cluster primary."""
    with unavailable_on_error():
        if isinstance(client, RedisCluster):
            await client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await client.ping()


# -- pub/sub -------------------------------------------------------------------------------


class Subscriber:
    """Subscriptions of one process, on the topology of `settings`.

    A single server's or Sentinel's master's channel; in a Cluster, where PUBLISH
    reaches every node, one node's, moving to another known node after a loss.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Cluster: the nodes known so far (REDIS_URL's first) and which one is next
        self._nodes = [_node(settings)]
        self._turn = 0

    def _client(self) -> Redis:
        """A client of its own with no reconnect: a subscription lost must be noticed."""
        settings = self.settings
        timeouts = _timeouts(settings, retries=0)
        if settings.redis_sentinels:
            sentinel = _sentinel(settings)
            client = sentinel.master_for(
                settings.redis_sentinel_master, redis_class=_Bounded, **timeouts
            )
            assert isinstance(client, _Bounded)
            client.sentinel_manager = sentinel  # closed with the client
            return client
        options = {**_url_options(settings), **timeouts}
        if settings.redis_cluster:
            options.pop("db", None)
            options["host"], options["port"] = self._nodes[self._turn % len(self._nodes)]
        return Redis.from_pool(ConnectionPool(**options, max_connections=1))

    async def _learn_nodes(self, client: Redis) -> None:
        """Remember the Cluster's nodes, to move to another should this one go."""
        found = list(self._nodes)
        # redis-py answers {"host:port": {"flags": ..., "connected": ...}, ...}
        nodes = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
        for address, node in dict(nodes).items():
            host, _, port = str(address).rpartition(":")
            if "fail" in str(node.get("flags", "")) or not node.get("connected", True):
                continue
            if host and port.isdigit() and (host, int(port)) not in found:
                found.append((host, int(port)))
        self._nodes = found

    async def listen(self, channel: str) -> AsyncGenerator[str | None, None]:
        """The messages on `channel`, on one dedicated connection.

        Yields None first, once subscribed: from then on no message is missed. Raises
        `Unavailable` when the connection is lost or Redis stops answering (a ping
        unanswered for REDIS_TIMEOUT); there is no silent reconnect, which could drop
        messages unnoticed: call again to subscribe again.
        """
        deadline = self.settings.redis_timeout
        client = self._client()
        pubsub = client.pubsub()
        try:
            with unavailable_on_error():
                await _bounded(deadline, self._subscribe(client, pubsub, channel))
                yield None
                async with contextlib.aclosing(_messages(pubsub, deadline)) as messages:
                    async for data in messages:
                        yield data
        except Unavailable:
            self._turn += 1  # a Cluster: another node next time
            raise
        finally:
            with contextlib.suppress(*_FAILURES):
                await _bounded(deadline, _close(pubsub, client))

    async def _subscribe(self, client: Redis, pubsub: PubSub, channel: str) -> None:
        if self.settings.redis_cluster:
            await self._learn_nodes(client)
        await pubsub.subscribe(channel)
        # the server's confirmation, before claiming to be subscribed
        confirmed = await pubsub.get_message(timeout=self.settings.redis_timeout)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise RedisConnectionError(f"SUBSCRIBE not confirmed: {confirmed!r}")


async def _close(pubsub: PubSub, client: Redis) -> None:
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


async def _messages(pubsub: PubSub, redis_timeout: float) -> AsyncGenerator[str, None]:
    """The data of each message; a ping after each PING_EVERY of quiet must be
    answered within half of `redis_timeout` (at least a quarter of a second)."""
    deadline = max(0.25, redis_timeout / 2)
    loop = asyncio.get_running_loop()
    pinged: float | None = None
    while True:
        wait = PING_EVERY if pinged is None else pinged + deadline - loop.time()
        if wait <= 0:
            raise RedisTimeoutError(f"no answer from Redis within {deadline:g} s")
        message = await pubsub.get_message(timeout=wait)
        if message is None:
            if pinged is None:
                await pubsub.ping()
                pinged = loop.time()
            continue
        pinged = None  # anything at all shows the server answers
        if message["type"] == "message":
            yield str(message["data"])
