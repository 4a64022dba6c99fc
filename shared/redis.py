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
- Auto-pipelining (single server and Sentinel): the commands and non-transactional
  pipelines that concurrent callers issue within one event-loop tick go to Redis
  together, as one pipeline on one connection; each caller gets its own results and
  its own errors, within its own deadline. redis-py spends most of its CPU per call,
  not per command, so this is what lets one process answer many requests a second.
  Transactions, blocking commands and connection state (SELECT, WATCH, CLIENT ...)
  never join a batch; pub/sub has connections of its own. A Cluster is not batched.
- A batch sends a script as EVALSHA, after a SCRIPT LOAD in front of the first batch
  that uses it on a connection (a new connection, to a restarted or promoted server,
  loads again). A server whose scripts are flushed while connected (SCRIPT FLUSH)
  answers that batch's scripts NOSCRIPT, and the next batch loads them again: a script
  called by itself is then sent once more; one queued on a pipeline fails for its
  caller (503 at the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Generator, Iterable, Iterator, Mapping
from importlib import resources
from typing import Any, TypeVar, cast

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

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


_INCLUDE = "--!include "


@functools.cache
def load_script(name: str) -> str:
    """A Lua script shipped in shared/lua/, with each `--!include <file>` line replaced by
    that file's text (pieces several scripts share, such as lib_user_json.lua; Redis runs
    one self-contained text per script)."""
    text = resources.files("shared").joinpath("lua", name).read_text()
    return "".join(
        load_script(line.removeprefix(_INCLUDE).strip()) if line.startswith(_INCLUDE) else line
        for line in text.splitlines(keepends=True)
    )


# every script registered on a Cluster client, by its SHA1, so a pipeline can send it whole
# (as UTF-8, encoded once: a script's text is a kilobyte, sent with every call)
_BODIES: dict[str, bytes] = {}
# and each text's SHA1, by the text (the very object a queued EVAL carries)
_SHAS: dict[bytes, str] = {}
_REGISTRY = "_tglogin_scripts"


class Script(AsyncScript):
    """A registered script, called as redis-py's (`await script(keys=..., args=...,
    client=...)`), without its cost on a pipeline of this module: queued there it goes
    as EVAL with its text at once (redis-py's call imports a module and queues the
    script for a `SCRIPT EXISTS` check that these pipelines skip, each time). When the
    pipeline joins a batch, the batch sends it as EVALSHA (`_by_sha`); so does a call
    by itself on a batching client."""

    async def __call__(
        self,
        keys: Any = None,
        args: Any = None,
        client: Any = None,
    ) -> Any:
        body = _BODIES.get(self.sha)
        if body is None:
            return await super().__call__(keys, args, client)
        keys, args = keys or (), args or ()
        command = ("EVAL", body, len(keys), *keys, *args)
        if type(client) in _OWN_PIPELINES and not getattr(client, "watching", False):
            return client.execute_command(*command)
        called = client if client is not None else self.registered_client
        if type(called) is _Bounded and called.batcher is not None:
            # by itself, into the batch (sent as EVALSHA) without redis-py's layers; a
            # server that lost its scripts (NOSCRIPT: it did not run) gets it loaded again
            # by the next batch
            try:
                return await called.execute_command(*command)
            except NoScriptError:
                return await called.execute_command(*command)
        return await super().__call__(keys, args, client)


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


def _utf8(script: str | bytes) -> bytes:
    return script.encode() if isinstance(script, str) else script


def scripts(client: Redis) -> Scripts:
    """The script registry of `client` (made on first use)."""
    registry = getattr(client, _REGISTRY, None)
    if not isinstance(registry, Scripts):
        registry = Scripts(client)
        setattr(client, _REGISTRY, registry)
    return registry


# -- auto-pipelining -------------------------------------------------------------------------

# one queued command as redis-py's pipelines keep it: its arguments and options
_Command = tuple[tuple[Any, ...], Mapping[str, Any]]

# commands that never join a batch: they block their connection, change its state, or
# answer in ways a pipeline cannot hand back
_UNBATCHED = frozenset(
    """BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP XREAD XREADGROUP WAIT
    WAITAOF SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE MONITOR
    MULTI EXEC DISCARD WATCH UNWATCH SELECT AUTH HELLO RESET QUIT CLIENT SHUTDOWN DEBUG
    SYNC PSYNC REPLICAOF SLAVEOF FAILOVER""".split()
)


def _batchable(command: _Command) -> bool:
    name = command[0][0]
    known = _BATCHABLE.get(name)
    if known is None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        known = text.partition(" ")[0].upper() not in _UNBATCHED
        if len(_BATCHABLE) < 1024:  # command names, a few dozen
            _BATCHABLE[name] = known
    return known


def _all_batchable(commands: list[_Command]) -> bool:
    for command in commands:
        if not _batchable(command):
            return False
    return True


# whether a command of this name may join a batch, as _batchable found it
_BATCHABLE: dict[Any, bool] = {}


class _Batcher:
    """The commands one client's callers issue within one event-loop tick, sent to Redis
    as one pipeline (`raise_on_error=False`) on one pooled connection.

    The first command of a tick schedules the flush for the next turn of the loop, so
    every caller that runs in this turn joins; each gets its slice of the answers, a
    command's error (WRONGTYPE, NOSCRIPT) as an exception in its own slice. A failure of
    the whole batch (no connection, no answer by the deadline) reaches every caller in
    it. The batch's deadline counts from its first caller's call: no caller waits longer
    than REDIS_TIMEOUT. Batches do not wait for each other: the next tick's batch takes
    another connection of the pool.
    """

    def __init__(self, client: _Bounded) -> None:
        self._client = client
        self._commands: list[_Command] = []
        # each caller's future and the slice of the batch's answers that is its own
        self._callers: list[tuple[asyncio.Future[list[Any]], int, int]] = []
        self._since = 0.0
        self._running: set[asyncio.Task[None]] = set()  # kept until done

    def submit(self, commands: list[_Command]) -> asyncio.Future[list[Any]]:
        """A future of the answers to `commands` (sent with the rest of this tick's)."""
        loop = asyncio.get_running_loop()
        if not self._callers:
            self._since = loop.time()
            loop.call_soon(self._flush)
        future: asyncio.Future[list[Any]] = loop.create_future()
        start = len(self._commands)
        self._commands.extend(commands)
        self._callers.append((future, start, len(self._commands)))
        return future

    async def drain(self) -> None:
        """Send what is queued and wait for every batch on its way (each ends within
        its deadline): a client closing lets its callers have their answers."""
        self._flush()
        if self._running:
            await asyncio.wait(set(self._running))

    def _flush(self) -> None:
        commands, callers = self._commands, self._callers
        if not callers:  # drained before its turn came
            return
        self._commands, self._callers = [], []
        task = asyncio.ensure_future(self._send(commands, callers, self._since))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(
        self,
        commands: list[_Command],
        callers: list[tuple[asyncio.Future[list[Any]], int, int]],
        since: float,
    ) -> None:
        client = self._client
        left = client.deadline - (asyncio.get_running_loop().time() - since)
        try:
            answers = await _bounded(left, self._execute(commands))
        except BaseException as exc:
            for future, _, _ in callers:
                if not future.done():
                    future.set_exception(_own_copy(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for future, start, end in callers:
            if not future.done():  # not cancelled meanwhile
                future.set_result(answers[start:end])


    async def _execute(self, commands: list[_Command]) -> list[Any]:
        """The answers to `commands`, sent as one pipeline on one pooled connection, a
        command's error in its own place: what redis-py's Pipeline.execute does with
        `raise_on_error=False` for a non-transactional pipeline, without its layers
        (about a microsecond and a half a command). A broken connection is connected
        again and the pipeline sent again, within the client's retries, as redis-py does.
        """
        pool = self._client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return cast(list[Any], await connection.retry.call_with_retry(
                lambda: self._exchange(connection, commands),
                lambda error: connection.disconnect(),
            ))
        finally:
            await pool.release(connection)

    async def _exchange(
        self, connection: AbstractConnection, commands: list[_Command]
    ) -> list[Any]:
        loads, sent = _by_sha(connection, commands)
        await _send(connection, connection.pack_commands([*loads, *sent]))
        if loads:
            try:
                for _ in loads:
                    await connection.read_response()
            except BaseException:
                # the server has not got them all; the answers behind stay unread
                await connection.disconnect(nowait=True)
                raise
        callbacks = self._client.response_callbacks
        answers: list[Any] = []
        parser = _buffered_parser(connection)
        for args, options in commands:
            raw = NEVER_DECODE in options
            # an answer already read from the socket is taken from the reader as it is;
            # the first of a batch (and any not all arrived yet) is waited for as
            # redis-py waits
            answer = NOT_ENOUGH_DATA
            if parser is not None:
                answer = _next_buffered(parser, raw)
                while answer is not NOT_ENOUGH_DATA and _is_push(parser, answer):
                    await parser.handle_push_response(answer)  # as read_response does
                    answer = _next_buffered(parser, raw)
            if answer is NOT_ENOUGH_DATA:
                try:
                    answer = await connection.read_response(disable_decoding=raw)
                except ResponseError as exc:
                    answer = exc
            elif isinstance(answer, RedisConnectionError):  # as read_response raises it
                await connection.disconnect(nowait=True)
                raise answer
            if isinstance(answer, ResponseError):
                if isinstance(answer, NoScriptError):  # SCRIPT FLUSH: load them again
                    _scripts_lost()
                if EMPTY_RESPONSE not in options:
                    answers.append(answer)
                    continue
                answer = options[EMPTY_RESPONSE]
            else:
                callback = callbacks.get(args[0])
                if callback is not None:
                    try:
                        answer = callback(answer, **{
                            name: value for name, value in options.items()
                            if name not in _NOT_FOR_CALLBACKS
                        }) if options else callback(answer)
                        if inspect.isawaitable(answer):
                            answer = await answer
                    except Exception as exc:
                        # that caller's error; the answers after it are still read, so
                        # none is left on the connection for the next batch
                        answer = exc
            answers.append(answer)
        return answers


async def _send(connection: AbstractConnection, packed: list[bytes]) -> None:
    """`connection.send_packed_command(packed)` without its own deadline: with
    REDIS_TIMEOUT as socket timeout, redis-py makes a task to write in (`wait_for`), one
    more turn of the loop before a batch leaves; a batch has its deadline already
    (`_bounded`). Errors as redis-py has them, the connection closed."""
    writer = getattr(connection, "_writer", None)
    if writer is None or not connection.is_connected:
        await connection.send_packed_command(packed)
        return
    await connection.check_health()  # type: ignore[no-untyped-call]
    try:
        writer.writelines(packed)
        await writer.drain()
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
    except BaseException:  # cancelled at the deadline: the rest of the batch is unsent
        await connection.disconnect(nowait=True)
        raise


def _scripts_loaded(connection: AbstractConnection) -> set[str]:
    """The SHA1s of the scripts this connection's server has loaded, as far as this
    process knows: empty again on each new socket (a restarted or promoted server has
    none), and on every connection once any answered NOSCRIPT (`_scripts_lost`)."""
    socket_reader = getattr(connection, "_reader", None)  # a new one on each connect
    known: tuple[Any, int, set[str]] | None = getattr(connection, _LOADED, None)
    if known is None or known[0] is not socket_reader or known[1] != _LOST[0]:
        known = (socket_reader, _LOST[0], set())
        setattr(connection, _LOADED, known)
    return known[2]


def _scripts_lost() -> None:
    """A server answered NOSCRIPT (its scripts were flushed): every connection loads its
    scripts again before its next batch."""
    _LOST[0] += 1


_LOADED = "_tglogin_scripts_loaded"
_LOST = [0]  # how many times a server was found without its scripts


def _by_sha(
    connection: AbstractConnection, commands: list[_Command]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A batch's commands with each registered script's EVAL (its text, as queued on a
    pipeline) sent as EVALSHA, and the SCRIPT LOADs to send first: each script once per
    connection. A script's text is kilobytes, sent with every call, and hashed by the
    server each time; its SHA1 is 40 bytes."""
    loaded = _scripts_loaded(connection)
    loads: list[tuple[Any, ...]] = []
    sent: list[tuple[Any, ...]] = []
    for args, _ in commands:
        if args[0] == "EVAL" and type(args[1]) is bytes:
            sha = _SHAS.get(args[1])
            if sha is not None:
                if sha not in loaded:
                    loads.append(("SCRIPT", "LOAD", args[1]))
                    loaded.add(sha)
                args = ("EVALSHA", sha, *args[2:])
        sent.append(args)
    return loads, sent


def _buffered_parser(connection: AbstractConnection) -> Any:
    """The connection's hiredis parser when answers may be taken from its reader as they
    are (`_next_buffered`); None when they must go through `read_response` (another
    parser, a connection being closed).

    A batch's answers mostly arrive in one read: taking all but the first straight from
    the reader skips redis-py's layers per answer (a timeout context, health-check
    bookkeeping, two coroutines), a few microseconds each.
    """
    parser = getattr(connection, "_parser", None)
    if type(parser) is not _AsyncHiredisParser or not getattr(parser, "_connected", False) \
            or getattr(parser, "_reader", None) is None:
        return None
    return parser


def _next_buffered(parser: Any, raw: bool) -> Any:
    """The next answer the parser's reader holds whole, or NOT_ENOUGH_DATA."""
    reader = parser._reader
    if not reader.has_data():
        return NOT_ENOUGH_DATA
    return reader.gets(False) if raw else reader.gets()


def _is_push(parser: Any, answer: Any) -> bool:
    """Whether `answer` is a RESP3 out-of-band push, not an answer."""
    push = parser._hiredis_PushNotificationType
    return push is not None and isinstance(answer, push)


# options of a queued command that are not its answer's callback's (redis-py drops them)
_NOT_FOR_CALLBACKS = frozenset({NEVER_DECODE, EMPTY_RESPONSE, "keys"})


def _own_copy(exc: BaseException) -> BaseException:
    """An exception of its own for each caller of a failed batch (one object raised in
    many tasks would collect all their tracebacks)."""
    if isinstance(exc, RedisError | OSError):
        try:
            copy: BaseException = type(exc)(*exc.args)
        except Exception:
            copy = RedisConnectionError(str(exc))
    elif isinstance(exc, asyncio.CancelledError):
        copy = RedisConnectionError("the client was closed during the call")
    else:
        copy = RedisError(f"{type(exc).__name__}: {exc}")
    copy.__cause__ = exc
    return copy


# -- clients whose every call has a deadline ---------------------------------------------------


class _Bounded(Redis):
    """A client (single server or Sentinel-managed) with a deadline on every call."""

    deadline: float = 5.0
    sentinel_manager: Sentinel | None = None
    # set by connect(): concurrent calls share pipelines (see _Batcher)
    batcher: _Batcher | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = (args, options)
        if self.batcher is not None and _batchable(command):
            (answer,) = await self.batcher.submit([command])
            if isinstance(answer, Exception):  # Redis's error, or its answer's callback's
                raise answer
            return answer
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _bounded(self.deadline, call)

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered = Script(self, script)
        body = _BODIES.setdefault(registered.sha, _utf8(script))  # for this client's pipelines
        _SHAS[body] = registered.sha
        return registered

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _BoundedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.deadline = self.deadline
        pipe.batcher = self.batcher
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.batcher is not None:
            await self.batcher.drain()
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


class _BoundedPipeline(Pipeline):
    """A pipeline with the client's deadline, whose registered scripts go as EVAL with
    their text: redis-py otherwise asks `SCRIPT EXISTS` before every pipeline that holds
    a script, one more round trip each time, and no server can answer NOSCRIPT."""

    deadline: float = 5.0
    batcher: _Batcher | None = None

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        body = _BODIES.get(sha)
        if body is None:
            return super().evalsha(sha, numkeys, *keys_and_args)
        return self.execute_command("EVAL", body, numkeys, *keys_and_args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.scripts:
            self.scripts = {s for s in self.scripts if s.sha not in _BODIES}
        stack = self.command_stack
        if (
            self.batcher is None
            or self.is_transaction
            or self.explicit_transaction
            or self.watching
            or self.scripts
            or not stack
            or not _all_batchable(stack)
        ):
            return await _bounded(self.deadline, super().execute(raise_on_error))
        self.command_stack = []
        answers = await self.batcher.submit(stack)
        if raise_on_error:
            self.raise_first_error(stack, answers)
            for answer in answers:  # an answer's callback failed (redis-py raises it too)
                if isinstance(answer, Exception) and not isinstance(answer, ResponseError):
                    raise answer
        return answers

    async def reset(self) -> None:  # type: ignore[override]
        if self.connection is None and not self.watching:  # a batched or unused pipeline
            self.command_stack = []
            if self.scripts:
                self.scripts = set()
            self.explicit_transaction = False
            return
        await super().reset()  # type: ignore[no-untyped-call]


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
        registered = Script(self, script)
        body = _BODIES.setdefault(registered.sha, _utf8(script))  # for this client's pipelines
        _SHAS[body] = registered.sha
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


# the pipelines whose queued scripts go as EVAL with their text (Script)
_OWN_PIPELINES = frozenset({_BoundedPipeline, _BoundedClusterPipeline})

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


def _packing_with_hiredis(kind: type[AbstractConnection]) -> type[AbstractConnection]:
    """`kind` of connection, packing commands with hiredis's C packer when hiredis is
    installed, as redis-py's synchronous client does (its asyncio client packs in
    Python: about 1.5 µs a command, 6 µs a script sent as EVAL with its text; hiredis:
    0.2 and 1)."""
    if not HIREDIS_AVAILABLE:
        return kind
    packing = _PACKING_WITH_HIREDIS.get(kind)
    if packing is None:
        packing = _PACKING_WITH_HIREDIS[kind] = type(
            kind.__name__, (kind,),
            {"pack_command": _pack_with_hiredis, "pack_commands": _pack_all_with_hiredis},
        )
    return packing


_PACKING_WITH_HIREDIS: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _split_name(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A command name of two words ("SCRIPT FLUSH", b"CONFIG GET") as two arguments."""
    name = args[0]
    if isinstance(name, str | bytes) and " " in str(name):
        return (*name.split(), *args[1:])
    return args


def _pack_with_hiredis(self: AbstractConnection, *args: Any) -> list[bytes]:
    args = _split_name(args)
    try:
        return [hiredis.pack_command(args)]
    except TypeError:  # memoryview, bytearray: redis-py's own packer takes them
        packed: list[bytes] = AbstractConnection.pack_command(self, *args)
        return packed


def _pack_all_with_hiredis(
    self: AbstractConnection, commands: Iterable[tuple[Any, ...]]
) -> list[bytes]:
    """A pipeline's commands packed by hiredis as one buffer (ours are small)."""
    commands = list(commands)
    try:
        return [b"".join([hiredis.pack_command(_split_name(args)) for args in commands])]
    except TypeError:  # memoryview, bytearray: redis-py's own packer takes them
        packed: list[bytes] = AbstractConnection.pack_commands(self, commands)
        return packed


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


def _timeouts(settings: Settings, *, retries: int, reads: bool = True) -> dict[str, Any]:
    """Socket options of every connection: REDIS_TIMEOUT for connecting and, with
    `reads`, each read; `retries` reconnects after a broken connection (never after a
    timeout)."""
    return {
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout if reads else None,
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


def connect(settings: Settings, *, batched: bool = True) -> Redis:
    """The data client for `settings`. Every call answers within REDIS_TIMEOUT.

    A Cluster client is a `redis.asyncio.cluster.RedisCluster`: the commands, pipelines
    (non-transactional) and scripts tglogin uses behave alike on it, so callers see
    one `Redis` type. `batched=False` turns auto-pipelining off (to measure it).
    """
    if settings.redis_cluster:
        host, port = _node(settings)
        options = {**_url_options(settings, where=False), **_timeouts(settings, retries=1)}
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
    # every call has its deadline (_Bounded, _Batcher): a timeout on each read would
    # only add a timer per answer read, a third of the CPU of a batched command
    timeouts = _timeouts(settings, retries=1, reads=False)
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
        pool = client.connection_pool
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
    pool.connection_class = _packing_with_hiredis(pool.connection_class)
    client.deadline = settings.redis_timeout
    if batched:
        client.batcher = _Batcher(client)
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
