"""One atomic step per state change, against a real Redis: a redeem consumes its code
and makes its token together; a new code replaces the previous at once; /logout ends
every token, including one made at the same moment; tokens belong to their client."""

from __future__ import annotations

import asyncio

import pytest

from shared import keys
from shared.codes import StoredCode, make_token, now_ms
from shared.hashing import short_digest, slot_code
from shared.logins import Logins
from shared.settings import ApiClient, Secret
from shared.store import InvalidCode, Store
from shared.tokens import new_token_id
from tests.fixtures.store import run_on_store
from tests.shared.test_store import ANN, SECRET, make_settings

SHOP = ApiClient("shop.example", Secret("shop-key-0123456789abcdefgh"))
BLOG = ApiClient("blog.example", Secret("blog-key-0123456789abcdefgh"))


def test_a_code_is_consumed_once_by_its_own_script(redis_url: str) -> None:
    """The script that consumes a code turns it from live to redeemed once; the token
    made from it needs nothing else written to count."""

    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        key = keys.code(short_digest(Secret(SECRET), "code", issued.code))
        uid, token_id, now = ANN["id"], new_token_id(), now_ms()
        consume = store.codes._consume
        assert await consume(keys=[key], args=[now, uid + 1]) is None  # not that user's
        value = await consume(keys=[key], args=[now, uid])
        assert value is not None and value.startswith(f"L{uid}|")
        token = make_token(store.settings, uid, 0, None, token_id, now)
        await store.sessions.enter(ANN)  # the record a redeem lists with the token
        assert await store.token_user(token) == ANN
        # and the code is spent
        assert await consume(keys=[key], args=[now, uid]) is None
        with pytest.raises(InvalidCode):
            await store.redeem_code(issued.code, "10.9.9.9")

    run_on_store(make_settings(redis_url), body)


def test_a_new_code_voids_the_previous_in_the_same_step(redis_url: str) -> None:
    async def body(store: Store) -> None:
        codes = await asyncio.gather(*(store.issue_code(ANN) for _ in range(5)))
        assert all(c is not None for c in codes)
        results = await asyncio.gather(
            *(store.redeem_code(c.code, f"10.9.0.{n}") for n, c in enumerate(codes) if c),
            return_exceptions=True,
        )
        # of five codes issued at once, exactly the one that is current redeems
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, InvalidCode) for r in results if isinstance(r, BaseException))

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="100"), body)


def test_logout_ends_every_token_even_one_made_at_the_same_moment(redis_url: str) -> None:
    async def body(store: Store) -> None:
        for round_ in range(30):
            issued = await store.issue_code(ANN)
            assert issued is not None
            redeemed, _ = await asyncio.gather(
                store.redeem_code(issued.code, f"10.8.0.{round_}"),
                store.revoke_user(ANN["id"]),
                return_exceptions=True,
            )
            if isinstance(redeemed, BaseException):
                assert isinstance(redeemed, InvalidCode)  # the logout voided the code first
                continue
            # redeemed before the logout: the logout ended it
            assert await store.token_user(redeemed.access_token) is None

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="100"), body)


def test_logout_counts_and_ends_the_live_tokens(redis_url: str) -> None:
    async def body(store: Store) -> None:
        tokens = []
        for _ in range(3):
            issued = await store.issue_code(ANN)
            assert issued is not None
            tokens.append((await store.redeem_code(issued.code, "10.7.0.1")).access_token)
        assert await store.revoke_token(tokens[0])
        assert await store.revoke_user(ANN["id"]) == 2
        assert [await store.token_user(t) for t in tokens] == [None, None, None]
        assert await store.revoke_user(ANN["id"]) == 0
        # a new login after the logout works
        issued = await store.issue_code(ANN)
        assert issued is not None
        fresh = await store.redeem_code(issued.code, "10.7.0.1")
        assert await store.token_user(fresh.access_token) == ANN

    run_on_store(make_settings(redis_url), body)


def test_a_token_works_only_for_the_client_that_obtained_it(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        token = (await store.redeem_code(issued.code, "10.6.0.1", SHOP)).access_token
        assert await store.token_user(token, SHOP) == ANN
        assert await store.token_user(token, BLOG) is None
        assert await store.token_user(token, None) is None
        assert not await store.revoke_token(token, BLOG)
        assert await store.token_user(token, SHOP) == ANN  # the refused revoke did nothing
        assert await store.revoke_token(token, SHOP)
        assert await store.token_user(token, SHOP) is None

    run_on_store(make_settings(redis_url), body)


def test_an_approval_made_before_a_logout_gives_a_token_the_logout_ended(
    redis_url: str,
) -> None:
    async def body(store: Store) -> None:
        logins = Logins(store)
        created = await logins.create(SHOP, None, "10.5.0.1")
        decision = await logins.decide(created.payload, ANN, approve=True)
        assert decision is not None and decision.status == "approved"
        await store.revoke_user(ANN["id"])
        approved = await logins.poll(created.id, SHOP)
        assert approved is not None and approved.redemption is not None
        assert await store.token_user(approved.redemption.access_token, SHOP) is None

        created = await logins.create(SHOP, None, "10.5.0.1")
        await logins.decide(created.payload, ANN, approve=True)
        approved = await logins.poll(created.id, SHOP)
        assert approved is not None and approved.redemption is not None
        token = approved.redemption.access_token
        assert await store.token_user(token, SHOP) == ANN
        assert await store.token_user(token, BLOG) is None
        assert await store.revoke_user(ANN["id"]) == 1

    run_on_store(make_settings(redis_url, TELEGRAM_BOT_USERNAME="b"), body)


def test_nothing_about_a_live_token_but_its_id_is_in_redis(redis_url: str) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN)
        assert issued is not None
        token = (await store.redeem_code(issued.code, "10.4.0.1")).access_token
        dump = "\n".join(str(k) for k in await store.redis.keys("*"))
        assert token not in dump and token[4:20] not in dump

    run_on_store(make_settings(redis_url), body)


def test_two_users_never_share_a_live_code_even_when_their_digits_collide(
    redis_url: str,
) -> None:
    """Codes are derived from the user's slots; when one user's slot derives another
    user's live code, that user gets the next slot, never the other's key."""
    settings = make_settings(redis_url, CODE_LENGTH="6", CODE_ISSUE_WINDOW_SECONDS="86400")
    secret, window = settings.auth_secret, now_ms() // 86_400_000
    alice_code = slot_code(secret, ANN["id"], window, 0, 6)
    bob_id = next(uid for uid in range(3000, 50_000_000)
                  if slot_code(secret, uid, window, 0, 6) == alice_code)
    bob = {**ANN, "id": bob_id, "username": "bob", "first_name": "Bob"}

    async def body(store: Store) -> None:
        alice = await store.issue_code(ANN, update_key="42:1:aaaa")
        bobs = await store.issue_code(bob, update_key="42:2:bbbb")
        assert alice is not None and bobs is not None
        assert alice.code == alice_code != bobs.code
        assert bobs.code == slot_code(secret, bob_id, window, 1, 6)
        # handled again, Bob's update finds the same code it got the first time
        again = await store.issue_code(bob, update_key="42:2:bbbb")
        assert again is not None and again.code == bobs.code
        assert (await store.redeem_code(alice.code, "10.3.0.1")).user["id"] == ANN["id"]
        assert (await store.redeem_code(bobs.code, "10.3.0.1")).user["id"] == bob["id"]

    run_on_store(settings, body)


def test_a_redeemed_code_stays_redeemed_when_its_update_is_handled_again(
    redis_url: str,
) -> None:
    async def body(store: Store) -> None:
        issued = await store.issue_code(ANN, update_key="42:7:cccc")
        assert issued is not None
        await store.redeem_code(issued.code, "10.2.0.1")
        assert await store.issue_code(ANN, update_key="42:7:cccc") is None  # nothing to send
        try:
            await store.redeem_code(issued.code, "10.2.0.1")
        except InvalidCode:
            return
        raise AssertionError("a redeemed code redeemed again")

    run_on_store(make_settings(redis_url), body)


def test_logout_in_the_bot_ends_the_tokens_of_every_client(redis_url: str) -> None:
    async def body(store: Store) -> None:
        tokens = []
        for client in (SHOP, BLOG, None):
            issued = await store.issue_code(ANN)
            assert issued is not None
            redeemed = await store.redeem_code(issued.code, "10.1.0.1", client)
            assert await store.token_user(redeemed.access_token, client) == ANN
            tokens.append((redeemed.access_token, client))
        assert await store.revoke_user(ANN["id"]) == 3
        assert [await store.token_user(t, c) for t, c in tokens] == [None, None, None]

    run_on_store(make_settings(redis_url), body)


def test_a_code_issued_during_a_logout_is_either_void_or_redeems(redis_url: str) -> None:
    """A /code and a /logout at the same moment: the code the user is shown is voided by
    the logout, or it is made at the generation after it and redeems; never a live code
    made at the ended generation, which no redeem could turn into a token."""

    async def body(store: Store) -> None:
        for round_ in range(40):
            issued, _ = await asyncio.gather(store.issue_code(ANN), store.revoke_user(ANN["id"]))
            assert issued is not None
            value = await store.redis.get(keys.code(short_digest(Secret(SECRET), "code",
                                                                 issued.code)))
            generation = int(await store.redis.hget(keys.user(ANN["id"]), "g") or 0)
            stored = StoredCode.parse(value)
            assert stored is not None
            if stored.state == "L":
                assert stored.generation == generation, round_
                redeemed = await store.redeem_code(issued.code, f"10.0.9.{round_}")
                assert await store.token_user(redeemed.access_token) == ANN
            else:
                assert stored.state == "R", round_

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="500"), body)


def test_a_user_with_hundreds_of_tokens_keeps_a_bounded_hash(redis_url: str) -> None:
    """Past 256 listed ids a token is not listed, so every script on the user's hash stays
    short; it still counts, and /logout ends it with the rest (the count says 256)."""

    async def body(store: Store) -> None:
        generation = await store.sessions.enter(ANN)
        tokens = [await store.sessions.token_for_approval(ANN, generation, SHOP)
                  for _ in range(300)]
        assert await store.redis.hlen(keys.user(ANN["id"])) <= 258  # ids, r and g
        assert await store.token_user(tokens[-1], SHOP) == ANN
        assert await store.revoke_user(ANN["id"]) == 256
        assert [await store.token_user(t, SHOP) for t in (tokens[0], tokens[-1])] == [None, None]

    run_on_store(make_settings(redis_url), body)
