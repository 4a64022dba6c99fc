"""The per-address failure budget against a real Redis: failures spend it, valid
redeems never do however many arrive at once, refusals do not extend it, and an IPv6
/64 is one budget in every spelling."""

from __future__ import annotations

import asyncio

import redis

from shared import keys
from shared.limits import RateLimited, address_hash
from shared.logins import Logins
from shared.store import InvalidCode, Store
from tests.fixtures.store import run_on_store
from tests.shared.test_store import ANN, make_settings


def _user(n: int) -> dict[str, object]:
    return {**ANN, "id": 30_000 + n, "username": f"u{n}"}


def test_valid_redeems_at_once_from_one_address_are_never_refused(redis_url: str) -> None:
    """A website's backend redeeming for 64 visitors at once, without X-Forwarded-For."""

    async def body(store: Store) -> None:
        codes = [await store.issue_code(_user(n)) for n in range(64)]
        results = await asyncio.gather(
            *(store.redeem_code(c.code, "203.0.113.5") for c in codes if c),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        # and the budget is untouched: ten typos are still ten typos
        for n in range(10):
            try:
                await store.redeem_code(f"{n:08d}", "203.0.113.5")
            except InvalidCode:
                pass
        try:
            await store.redeem_code("99999999", "203.0.113.5")
        except RateLimited:
            pass
        else:
            raise AssertionError("the eleventh failure was not refused")

    run_on_store(make_settings(redis_url), body)


def test_a_refused_attempt_spends_nothing_and_does_not_extend_the_window(
    redis_url: str,
) -> None:
    settings = make_settings(redis_url, REDEEM_FAIL_LIMIT="3", REDEEM_FAIL_WINDOW_SECONDS="600")
    fails_key = keys.redeem_fails(address_hash(settings, "203.0.113.6"))

    async def body(store: Store) -> list[int]:
        for n in range(3):
            try:
                await store.redeem_code(f"{n:08d}", "203.0.113.6")
            except InvalidCode:
                pass
        waits = []
        for n in range(20):
            try:
                await store.redeem_code(f"{n:08d}", "203.0.113.6")
            except RateLimited as refused:
                waits.append(refused.retry_after)
        return waits

    waits = run_on_store(settings, body)
    assert len(waits) == 20 and waits == sorted(waits, reverse=True)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.get(fails_key) == "3"
        assert 0 < client.pttl(fails_key) <= 600_000


def test_an_ipv6_64_is_one_budget_in_every_spelling(redis_url: str) -> None:
    settings = make_settings(redis_url, REDEEM_FAIL_LIMIT="4")
    spellings = ["2001:db8::1", "2001:DB8:0:0:0:0:0:2", "2001:db8::ffff:3", "2001:db8:0:0::4"]

    async def body(store: Store) -> None:
        for address in spellings:
            try:
                await store.redeem_code("00000000", address)
            except InvalidCode:
                pass
        for address in ("2001:db8::1", "2001:0db8::9999"):
            try:
                await store.redeem_code("00000000", address)
            except RateLimited:
                continue
            raise AssertionError(f"{address} has a budget of its own")
        # another /64 and IPv4 are separate; a mapped IPv4 address is that IPv4 address
        for address in ("2001:db8:0:1::1", "192.0.2.1"):
            try:
                await store.redeem_code("00000000", address)
            except InvalidCode:
                pass
        assert address_hash(settings, "::ffff:192.0.2.1") == address_hash(settings, "192.0.2.1")

    run_on_store(settings, body)


def test_login_request_creates_count_an_ipv6_64_as_one_address(redis_url: str) -> None:
    settings = make_settings(redis_url, LOGIN_REQUEST_LIMIT="2", TELEGRAM_BOT_USERNAME="b")

    async def body(store: Store) -> None:
        logins = Logins(store)
        await logins.create(None, None, "2001:db8::1")
        await logins.create(None, None, "2001:DB8:0:0:0:0:0:2")
        try:
            await logins.create(None, None, "2001:db8::ffff:3")
        except RateLimited:
            pass
        else:
            raise AssertionError("another address of the /64 had a budget of its own")
        await logins.create(None, None, "2001:db8:0:1::1")  # another /64

    run_on_store(settings, body)
