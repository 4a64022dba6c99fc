"""The measurements that need more than a load generator: codes issued as the bot issues
them, Redis memory per code, Redis round trips per operation, bot replies/s, wake-ups."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import redis

from bench.load import address, percentile
from bench.services import AUTH_SECRET, TelegramSandbox
from shared.logins import Logins
from shared.settings import Settings, load_settings
from shared.store import Store, User
from tests.fixtures.turns import TurnCounter

CONCURRENCY = 64


def settings_for(redis_url: str, **env: str) -> Settings:
    return load_settings(env={"AUTH_SECRET": AUTH_SECRET, "REDIS_URL": redis_url, **env},
                         env_file="/nonexistent")


def user(uid: int) -> User:
    return {"id": uid, "username": f"u{uid}", "first_name": "Bench", "last_name": None,
            "language_code": "en"}


async def issue_codes(store: Store, first_uid: int, count: int) -> list[str]:
    """One code each for users first_uid.. (count of them), CONCURRENCY at a time, as the
    bot issues them (each for an update of its own, so with the update's mark)."""
    codes: list[str] = [""] * count
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            issued = await store.issue_code(user(first_uid + i),
                                            update_key=f"1:{first_uid + i}:bench")
            assert issued is not None, "the issue limit refused a fresh user"
            codes[i] = issued.code

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return codes


def redeem_for_tokens(api_url: str, codes: list[str], subnet: int = 200) -> list[str]:
    """The access tokens `codes` redeem for through the API at `api_url`, each from its
    own X-Forwarded-For address in 10.`subnet`.0.0/16."""
    async def redeem_all() -> list[str]:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
            async def one(i: int, code: str) -> str:
                answer = await http.post(
                    "/v1/codes/redeem", json={"code": code},
                    headers={"X-Forwarded-For": f"10.{subnet}.{i >> 8}.{i & 255}"})
                assert answer.status_code == 200, answer.text
                return str(answer.json()["access_token"])
            return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(codes))))
    return asyncio.run(redeem_all())


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def memory_per_code(settings: Settings, client: redis.Redis, count: int,
                    first_uid: int) -> tuple[float, list[str], float]:
    """(bytes of `used_memory` growth per code, the codes, issues/s) over `count` codes of
    `count` distinct users on an otherwise idle server."""
    client.flushall()
    before = used_memory(client)
    started = time.perf_counter()
    codes = issue(settings, first_uid, count)
    elapsed = time.perf_counter() - started
    settled(client)
    after = used_memory(client)
    return (after - before) / count, codes, count / elapsed


def settled(client: redis.Redis) -> None:
    """Wait until Redis is done with what new keys set going: an append-only rewrite
    (its buffers are not the keys', and its child would share the cores with what is
    measured) and a growing table's rehash (its old copy is not the keys' either)."""
    persistence_idle(client)
    tables_settled(client)


def persistence_idle(client: redis.Redis, timeout: float = 180) -> None:
    """Wait until Redis is not rewriting its append-only file (a million new keys start
    a rewrite: a forked child on the same cores would be measured with the redeems)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not any(int(info.get(name, 0)) for name in (
                "aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")):
            return
        time.sleep(0.2)
    raise RuntimeError("Redis kept rewriting its files for 3 minutes")


def tables_settled(client: redis.Redis, timeout: float = 180) -> None:
    """Wait until Redis has finished rehashing its key tables. A table that grows past its
    size is copied into one twice as large a few buckets at a time (seconds on an idle
    server, about 20 s after a million new keys), holding both meanwhile: measured then,
    a million codes looked about 10 B a code dearer than they stay, and redeems among them
    did the copying's work. Servers whose MEMORY STATS do not report it are not waited
    for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not int(client.memory_stats().get("db.dict.rehashing.count", 0)):
            return
        time.sleep(0.2)
    raise RuntimeError("Redis kept rehashing its key tables for 3 minutes")


def issue(settings: Settings, first_uid: int, count: int) -> list[str]:
    """`issue_codes` through a store of its own, on an event loop of its own."""
    async def run() -> list[str]:
        store = Store.from_settings(settings)
        try:
            return await issue_codes(store, first_uid, count)
        finally:
            await store.close()

    return asyncio.run(run())


def memory_per_code_parallel(settings: Settings, client: redis.Redis, count: int,
                             first_uid: int, processes: int) -> tuple[float, list[str], float]:
    """`memory_per_code` with the issues spread over `processes` processes (one issuing
    process is slower than Redis: a million codes would take minutes)."""
    client.flushall()
    before = used_memory(client)
    share = count // processes
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(issue, [(settings, first_uid + n * share, share)
                                           for n in range(processes)])
    elapsed = time.perf_counter() - started
    settled(client)
    after = used_memory(client)
    codes = [code for part in parts for code in part]
    return (after - before) / len(codes), codes, len(codes) / elapsed


def memory_per_token(settings: Settings, client: redis.Redis, count: int,
                     first_uid: int) -> float:
    """Redis memory one live access token keeps (`used_memory` growth per redeem of
    `count` codes of `count` users, the codes issued before and not counted)."""
    client.flushall()

    async def run() -> float:
        store = Store.from_settings(settings)
        try:
            codes = await issue_codes(store, first_uid, count)
            before = used_memory(client)
            queue = iter(enumerate(codes))

            async def worker() -> None:
                for i, code in queue:
                    await store.redeem_code(code, address(i + 1))

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return (used_memory(client) - before) / count
        finally:
            await store.close()

    return asyncio.run(run())


# -- round trips --------------------------------------------------------------------------


class ProxyThread:
    """A TurnCounter running on its own event loop in a thread."""

    def __init__(self, upstream_port: int) -> None:
        self.counter = TurnCounter(upstream_port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.counter.start(), self.loop).result(5)

    def turns(self) -> int:
        time.sleep(0.05)  # let the last answer's bytes pass through
        return self.counter.turns

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.counter.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def count_turns(proxy: ProxyThread, operation: Callable[[int], object], times: int = 10) -> int:
    """The median turns one `operation(i)` takes (after one warm-up call: connections and
    scripts loaded), with an idle interval of the same length subtracted."""
    operation(-1)
    counts = []
    for i in range(times):
        before = proxy.turns()
        operation(i)
        counts.append(proxy.turns() - before)
    before = proxy.turns()
    idle = proxy.turns() - before
    return int(statistics.median(counts)) - idle


def issue_turns(proxy: ProxyThread, settings: Settings, first_uid: int) -> int:
    """Turns of one `Store.issue_code` (what the bot calls for /start and /code)."""
    loop = asyncio.new_event_loop()
    store = Store.from_settings(settings)
    try:
        return count_turns(
            proxy, lambda i: loop.run_until_complete(
                store.issue_code(user(first_uid + i + 1), update_key=f"1:{i}:turns"))
        )
    finally:
        loop.run_until_complete(store.close())
        loop.close()


def http_turns(proxy: ProxyThread, call: Callable[[int], httpx.Response]) -> int:
    def operation(i: int) -> None:
        answer = call(i)
        assert answer.status_code == 200, answer.text

    return count_turns(proxy, operation)


# -- the bot ------------------------------------------------------------------------------


def bot_replies_per_s(sandbox: TelegramSandbox, token: str, first_uid: int, count: int) -> float:
    """`count` users send `/start` at once; replies/s until the last reply."""
    bot_id = int(token.split(":", 1)[0])

    def replies() -> int:
        for bot in sandbox.bots():
            if bot["id"] == bot_id:
                return int(bot["send_message_calls"])
        return 0

    def burst(first: int, n: int) -> float:
        already = replies()
        batch = [{"text": "/start", "token": token,
                  "user": {"id": first + i, "first_name": "Bench", "language_code": "en"}}
                 for i in range(n)]
        started = time.time()
        answer = sandbox.post("/control/messages", batch)
        assert answer.status_code == 200, answer.text
        deadline = started + 120
        while replies() < already + n:
            if time.time() > deadline:
                raise RuntimeError(f"only {replies() - already} of {n} replies in 120 s")
            # the rate is timed by the sandbox's record of the last reply, not by this
            # loop; and each look summarises every bot the sandbox knows with all its
            # chats, so a look every 10 ms cost the sandbox more for the bot measured
            # later (about 0.06 ms a reply more per 3,000 chats before it)
            time.sleep(0.1)
        calls = sandbox.calls(token, "sendMessage", since=started)
        last = max(float(call["t"]) for call in calls)
        return n / (last - started)

    burst(first_uid, 50)  # warm-up: connections, scripts
    return burst(first_uid + 50, count)


# -- wake-ups -----------------------------------------------------------------------------


async def _wake(
    api_url: str, settings: Settings, approvals: int
) -> tuple[list[float], list[float]]:
    store = Store.from_settings(settings)
    logins = Logins(store)
    wakes: list[float] = []
    decides: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=40) as http:
            for i in range(approvals + 5):
                created = await http.post("/v1/login-requests", json={},
                                          headers={"X-Forwarded-For": address(i + 1)})
                assert created.status_code in (200, 201), created.text
                body = created.json()
                payload = body["deep_link"].rsplit("start=", 1)[1]
                waiting = asyncio.create_task(http.get(f"/v1/login-requests/{body['id']}",
                                                       params={"wait": 30}))
                await asyncio.sleep(0.03)  # the poll is held (watching before it reads)
                t0 = time.perf_counter()
                decision = await logins.decide(payload, user(30_000_000 + i), approve=True)
                t1 = time.perf_counter()
                answer = await waiting
                t2 = time.perf_counter()
                assert decision is not None and answer.status_code == 200, answer.text
                assert answer.json().get("status") == "approved", answer.text
                if i >= 5:  # the first few warm connections up
                    wakes.append((t2 - t0) * 1000)
                    decides.append((t1 - t0) * 1000)
    finally:
        await store.close()
    return wakes, decides


def wake(api_url: str, settings: Settings, approvals: int) -> dict[str, float]:
    """Approval (`Logins.decide`, as the bot's tap handler calls it) → the held
    `GET /v1/login-requests/{id}?wait=30` answered, in ms."""
    wakes, decides = asyncio.run(_wake(api_url, settings, approvals))
    wakes.sort()
    decides.sort()
    return {
        "wake_p50_ms": percentile(wakes, 50), "wake_p99_ms": percentile(wakes, 99),
        "wake_decide_p50_ms": percentile(decides, 50), "wake_approvals": len(wakes),
    }
