"""What an access token is good for: who it belongs to, ending one, ending them all.

Tokens are sealed (`shared.tokens`); a well-sealed token counts while it has
not expired, was obtained by the API client asking, was made at the user's
current session generation and is not marked revoked. All of it is one hash per
user (`keys.user`: the record, the generation, the token ids), so each operation is
one round trip, and a live token costs Redis its id and expiry in that hash.
"""

from __future__ import annotations

import contextlib
import time

from redis.asyncio import Redis

from shared import keys
from shared.codes import Codes, User, make_token, now_ms, pack_record, unpack_record
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings
from shared.tokens import Claims, client_tag, new_token_id, unseal


class Sessions:
    def __init__(self, redis: Redis, settings: Settings, codes: Codes) -> None:
        self.redis = redis
        self.settings = settings
        self.codes = codes
        self._revoke = scripts(redis).get("token_revoke.lua")
        self._logout = scripts(redis).get("logout.lua")
        self._register = scripts(redis).get("token_register.lua")

    def _claims(self, token: str, client: ApiClient | None) -> Claims | None:
        """The token's claims if it is sealed by us, unexpired, and `client`'s."""
        claims = unseal(self.settings.auth_secret, token)
        if claims is None or claims.expires <= time.time():
            return None
        if claims.client != client_tag(self.settings.auth_secret, client):
            return None
        return claims

    async def user_for(self, token: str, client: ApiClient | None) -> User | None:
        """The user an access token belongs to, or None if it does not count (for
        `client`)."""
        claims = self._claims(token, client)
        if claims is None:
            return None
        uid = claims.user_id
        with unavailable_on_error():
            record, generation, state = await self.redis.hmget(
                keys.user(uid), ["r", "g", claims.token_id]
            )
        if record is None or int(generation or 0) != claims.generation:
            return None
        if state is not None and str(state).startswith("-"):
            return None
        return unpack_record(uid, str(record))

    async def revoke(self, token: str, client: ApiClient | None) -> bool:
        """End one access token; False if it did not count."""
        claims = self._claims(token, client)
        if claims is None:
            return False
        with unavailable_on_error():
            ended = await self._revoke(
                keys=[keys.user(claims.user_id)],
                args=[claims.token_id, claims.generation, claims.expires, int(time.time())],
            )
        return bool(int(ended))

    async def logout(self, user_id: int) -> int:
        """End every access token of a user and void the user's code; how many tokens
        were live."""
        # the generation first: a code an issue writes after it reads the new one and is
        # voided there; one written before is found by void_all
        with unavailable_on_error():
            ended = await self._logout(
                keys=[keys.user(user_id)],
                args=[int(time.time()), self.settings.token_ttl_seconds],
            )
        await self.codes.void_all(user_id)
        return int(ended)

    # -- deep-link approvals ----------------------------------------------------------------

    async def enter(self, user: User) -> int:
        """Record the deciding user's details; the session generation to seal with."""
        key = keys.user(int(user["id"]))
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, "r", pack_record(user))
                pipe.expire(key, self.settings.token_ttl_seconds)
                pipe.hget(key, "g")
                _, _, generation = await pipe.execute()
        return int(generation or 0)

    async def token_for_approval(
        self, user: User, generation: int, client: ApiClient | None
    ) -> str:
        """The access token for a delivered approval, sealed at the generation read when
        the user approved (so a /logout since ends it too). Its id is listed for
        /logout's count; that listing is the one write, and the token counts without it."""
        uid = int(user["id"])
        token_id, now = new_token_id(), now_ms()
        ttl = self.settings.token_ttl_seconds
        with contextlib.suppress(Unavailable), unavailable_on_error():
            await self._register(
                keys=[keys.user(uid)],
                args=[token_id, now // 1000 + ttl, now // 1000, ttl, "", generation],
            )
        return make_token(self.settings, uid, generation, client, token_id, now)
