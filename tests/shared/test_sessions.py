"""One atomic step per state change, against a real Redis: a redeem consumes its code
and makes its token together; a new code replaces the previous at once; /logout ends
every token, including one made at the same moment; tokens belong to their client."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared import keys
from shared.codes import StoredCode, make_token, now_ms
from shared.hashing import short_digest, slot_code
from shared.logins import Logins
from shared.oidc_grants import InvalidGrant, OidcGrants, s256
from shared.settings import ApiClient, Secret
from shared.store import InvalidCode, Store
from shared.tokens import field_tail, network, network_text, new_token_id, parse_field, unseal
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


# -- /sessions: what a listed token's field tells, last use, ending one ---------------------


async def _redeem(store: Store, address: str, client: ApiClient | None = None) -> str:
    issued = await store.issue_code(ANN)
    assert issued is not None
    return (await store.redeem_code(issued.code, address, client)).access_token


def _token_id(store: Store, token: str) -> str:
    claims = unseal(store.settings.auth_secret, token)
    assert claims is not None
    return claims.token_id


def test_a_listed_token_tells_client_times_and_network_but_not_the_address(
    redis_url: str,
) -> None:
    async def body(store: Store) -> None:
        before = int(time.time())
        first = await _redeem(store, "203.0.113.77", SHOP)
        second = await _redeem(store, "2001:db8:1:2::99")
        third = await _redeem(store, "::ffff:198.51.100.7", BLOG)
        listed = await store.sessions.listed(ANN["id"])
        # newest first: the first session, made to have begun an hour earlier, comes last
        shop_id, user_key = _token_id(store, first), keys.user(ANN["id"])
        expiry, lifetime, rest = str(await store.redis.hget(user_key, shop_id)).split("|", 2)
        await store.redis.hset(user_key, shop_id, f"{expiry}|{int(lifetime) + 60}|{rest}")
        assert (await store.sessions.listed(ANN["id"]))[-1].token_id == shop_id
        await store.redis.hset(user_key, shop_id, f"{expiry}|{lifetime}|{rest}")
        by_id = {s.token_id: s for s in listed}
        assert len(by_id) == 3
        shop = by_id[_token_id(store, first)]
        assert (shop.client, shop.network, shop.family) == ("shop.example", "203.0.113.0/24", "")
        assert shop.began is not None and before - 60 <= shop.began <= time.time()
        assert shop.last_used == shop.began
        assert shop.expires == shop.began + store.settings.token_ttl_seconds
        v6 = by_id[_token_id(store, second)]
        assert (v6.client, v6.network) == ("", "2001:db8:1::/48")
        assert by_id[_token_id(store, third)].network == "198.51.100.0/24"
        fields = await store.redis.hgetall(keys.user(ANN["id"]))
        for name in by_id:
            value = fields[name]
            assert value.split("|")[0] == str(by_id[name].expires)
            assert len(value.encode()) <= 64  # a listpack value: the hash stays compact
        dump = "\n".join(fields.values())
        for address in ("203.0.113.77", "2001:db8:1:2", "198.51.100.7", ".77", ".7|"):
            assert address not in dump

    run_on_store(make_settings(redis_url, CODE_ISSUE_LIMIT="100"), body)


def test_a_token_field_names_a_long_client_within_its_64_bytes() -> None:
    name = "Магазин " + "очень " * 20
    # an API token living 30 days, last used on its last day; an OIDC one (an hour)
    for head, family in (("2000000000|43200|43199|", ""), ("2000000000|60|60|", "f" * 22)):
        tail = field_tail("2001:db8::1", family, name)
        parsed = parse_field("0" * 16, head + tail)
        assert parsed is not None and parsed.family == family
        # cut to whole characters; the bot shows the configured name it begins
        assert name.startswith(parsed.client) and len(parsed.client) >= 4
        assert len((head + tail).encode()) <= 64
    assert parse_field("0" * 16, "-2000000000") is None  # revoked
    legacy = parse_field("0" * 16, "2000000000")  # listed before sessions were recorded
    assert legacy is not None and legacy.began is None and legacy.network == ""
    assert network("unknown") == "" and network_text(network("10.1.2.3")) == "10.1.2.0/24"


def test_use_is_noted_at_most_once_a_minute(redis_url: str) -> None:
    """A token's last use moves on when a new minute began since it last did, in the
    same script that reads it; reads within that minute write nothing."""

    async def body(store: Store) -> None:
        token = await _redeem(store, "10.20.30.40")
        token_id = _token_id(store, token)
        (began,) = [s.began for s in await store.sessions.listed(ANN["id"])]
        assert began is not None
        key = keys.user(ANN["id"])

        async def field() -> str:
            return str(await store.redis.hget(key, token_id))

        issued = await field()
        for offset in (1, 30, 59):
            assert await store.sessions.user_for(token, None, now=began + offset) == ANN
            assert await field() == issued  # the minute it began: nothing written
        assert await store.sessions.user_for(token, None, now=began + 61) == ANN
        assert (await store.sessions.listed(ANN["id"]))[0].last_used == began + 60
        written = await field()
        assert written != issued and written.split("|")[2] == "1"
        for offset in (62, 90, 119):
            await store.sessions.user_for(token, None, now=began + offset)
            assert await field() == written
        await store.sessions.user_for(token, None, now=began + 3 * 3600 + 5)
        assert (await store.sessions.listed(ANN["id"]))[0].last_used == began + 3 * 3600
        # a revoked token is never touched back to life
        assert await store.revoke_token(token)
        await store.sessions.user_for(token, None, now=began + 5 * 3600)
        assert (await field()).startswith("-")

    run_on_store(make_settings(redis_url), body)


def test_ending_a_session_ends_its_token_at_once_and_only_once(redis_url: str) -> None:
    async def body(store: Store) -> None:
        tokens = [await _redeem(store, f"10.30.0.{n}", SHOP) for n in range(3)]
        ended_id = _token_id(store, tokens[1])
        ended = await store.sessions.end(ANN["id"], ended_id)
        assert ended is not None
        assert (ended.user_id, ended.session.token_id, ended.session.client) == (
            ANN["id"], ended_id, "shop.example")
        assert ended.session.network == "10.30.0.0/24" and ended.oidc_client_id == ""
        assert await store.token_user(tokens[1], SHOP) is None
        assert [await store.token_user(t, SHOP) for t in (tokens[0], tokens[2])] == [ANN, ANN]
        assert await store.sessions.end(ANN["id"], ended_id) is None  # already ended
        assert await store.sessions.end(ANN["id"] + 1, _token_id(store, tokens[0])) is None
        assert await store.sessions.end(ANN["id"], "r") is None
        assert ended_id not in {s.token_id for s in await store.sessions.listed(ANN["id"])}
        # marked revoked as token_revoke.lua marks one: the API's revoke finds it ended
        assert await store.redis.hget(keys.user(ANN["id"]), ended_id) == f"-{ended.session.expires}"
        assert not await store.revoke_token(tokens[1], SHOP)
        assert await store.revoke_user(ANN["id"]) == 2  # /logout counts the live ones
        assert await store.sessions.listed(ANN["id"]) == []

    run_on_store(make_settings(redis_url), body)


def test_fields_listed_before_sessions_were_recorded_still_count(redis_url: str) -> None:
    """A token listed by the previous release ("<expiry>" alone) still counts, is listed
    without details, ends, and /logout counts it."""

    async def body(store: Store) -> None:
        token = await _redeem(store, "10.40.0.1")
        claims = unseal(store.settings.auth_secret, token)
        assert claims is not None
        await store.redis.hset(keys.user(ANN["id"]), claims.token_id, str(claims.expires))
        assert await store.token_user(token) == ANN
        (listed,) = await store.sessions.listed(ANN["id"])
        assert listed.began is None and listed.expires == claims.expires
        assert await store.revoke_user(ANN["id"]) == 1
        token = await _redeem(store, "10.40.0.1")
        claims = unseal(store.settings.auth_secret, token)
        assert claims is not None
        await store.redis.hset(keys.user(ANN["id"]), claims.token_id, str(claims.expires))
        assert await store.sessions.end(ANN["id"], claims.token_id) is not None
        assert await store.token_user(token) is None

    run_on_store(make_settings(redis_url), body)


def test_an_approval_lists_the_network_of_the_poll_that_took_it(redis_url: str) -> None:
    async def body(store: Store) -> None:
        logins = Logins(store)
        created = await logins.create(SHOP, None, "10.5.0.1")
        await logins.decide(created.payload, ANN, approve=True)
        approved = await logins.poll(created.id, SHOP, "192.0.2.200")
        assert approved is not None and approved.redemption is not None
        (listed,) = await store.sessions.listed(ANN["id"])
        assert (listed.client, listed.network) == ("shop.example", "192.0.2.0/24")

    run_on_store(make_settings(redis_url, TELEGRAM_BOT_USERNAME="b"), body)


def test_an_openid_connect_grant_is_one_session_that_ends_whole(redis_url: str) -> None:
    """Its access tokens, refreshed or not, are one session (the token family): listed
    once, last used when any was; End ends them all and the refresh token with them."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    async def body(store: Store) -> None:
        grants = OidcGrants(store.redis, store.settings)
        approved = int(time.time()) - 120
        code = await grants.create("shop", "https://shop.example/cb", s256(verifier), None,
                                   ANN, approved, "openid")
        grant = await grants.redeem(code, "shop", "https://shop.example/cb", verifier,
                                    "198.51.100.9")
        (listed,) = await store.sessions.listed(ANN["id"])
        # no OIDC_CLIENTS in these settings: the client's id stands for its name
        assert (listed.client, listed.network) == ("shop", "198.51.100.0/24")
        assert listed.began is not None and approved <= listed.began < approved + 60
        assert listed.family
        refreshed = await grants.refresh(grant.refresh_token, "shop", "2001:db8:5::1")
        (listed,) = await store.sessions.listed(ANN["id"])
        # the newest token's network (the two expire in the same second here: either)
        assert listed.network in ("2001:db8:5::/48", "198.51.100.0/24")
        assert approved <= listed.began < approved + 60
        assert listed.last_used is not None and listed.last_used >= approved + 120
        assert await grants.access_user(grant.access_token, ("shop",)) == ("shop", ANN)
        ended = await store.sessions.end(ANN["id"], listed.token_id)
        assert ended is not None and ended.oidc_client_id == "shop"
        for token in (grant.access_token, refreshed.access_token):
            assert await grants.access_user(token, ("shop",)) is None
        with pytest.raises(InvalidGrant):
            await grants.refresh(refreshed.refresh_token, "shop")
        assert await store.sessions.listed(ANN["id"]) == []
        assert await store.revoke_user(ANN["id"]) == 0

    run_on_store(make_settings(redis_url), body)
