"""What an access token is good for: who it belongs to, ending one, ending them all.

Tokens are sealed (`shared.tokens`); a well-sealed token counts while it has
not expired, was obtained by the API client asking, was made at the user's
current session generation and is not marked revoked. All of it is one hash per
user (`keys.user`: the record, the generation, the token ids), so each operation is
one round trip, and a live token costs Redis its id and field in that hash (expiry,
when it began and was last used, from which network, for which client:
`shared.tokens`). Reading a token to judge it notes its use in the same script
(`token_touch.lua`, a write at most once a minute); `/sessions` lists a user's live
tokens (an OpenID Connect token family as one session) and ends one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.codes import (
    Codes,
    User,
    make_token,
    now_ms,
    pack_record,
    public_user,
    unpack_record,
)
from shared.events import event_args, queue_wake
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings
from shared.tokens import (
    Claims,
    Listed,
    client_tag,
    field_tail,
    new_token_id,
    parse_field,
    unseal,
)


@dataclasses.dataclass(frozen=True)
class Ended:
    """A session `/sessions` ended: what its `session.ended` event tells."""

    user_id: int
    session: Listed  # its field as it was (token id, client name, began, network ...)
    oidc_client_id: str  # the OIDC client's id for a token family's session, else ""


def client_name(settings: Settings, stored: str, oidc: bool = False) -> str:
    """The name of the client a session's field names, as configured: the stored one, or
    the one configured name it is the start of (a long name is cut to fit the field),
    among API_KEYS for an API token's session and among OIDC_CLIENTS for an OpenID
    Connect session (`oidc`: its field names a token family, and keeps fewer bytes of
    the name); as stored when no configured name matches."""
    if oidc:
        names = [client.name for client in settings.oidc.clients] if settings.oidc else []
    else:
        names = [client.name for client in settings.api_keys]
    if not stored or stored in names:
        return stored
    longer = {name for name in names if name.startswith(stored)}
    return longer.pop() if len(longer) == 1 else stored


def api_client_name(settings: Settings, stored: str) -> str:
    """The API_KEYS name a session's field names (`client_name`), or "" when it names
    none configured (the open API's session, or a client since removed): whom its events
    go to."""
    name = client_name(settings, stored)
    return name if any(client.name == name for client in settings.api_keys) else ""


async def read_token(redis: Redis, claims: Claims, now: float | None = None) -> list[Any]:
    """[record, generation, field] of the token's user as Redis has them, noting the
    token's use (at most one write a minute): one round trip (`token_touch.lua`)."""
    touch = scripts(redis).get("token_touch.lua")
    when = int(time.time() if now is None else now)
    with unavailable_on_error():
        found = await touch(keys=[keys.user(claims.user_id)],
                            args=[claims.token_id, claims.generation, when])
    return list(found)


def counts(claims: Claims, found: list[Any]) -> bool:
    """Whether what `read_token` found lets the token count: the user is known, the
    generation is the token's, and its id is not marked revoked (an id not listed, past
    256, counts)."""
    record, generation, state = found
    if record is None or int(generation or 0) != claims.generation:
        return False
    return state is None or not str(state).startswith("-")


class Sessions:
    def __init__(self, redis: Redis, settings: Settings, codes: Codes) -> None:
        self.redis = redis
        self.settings = settings
        self.codes = codes
        self._revoke = scripts(redis).get("token_revoke.lua")
        self._logout = scripts(redis).get("logout.lua")
        self._register = scripts(redis).get("token_register.lua")
        self._end = scripts(redis).get("token_end.lua")

    def _claims(self, token: str, client: ApiClient | None) -> Claims | None:
        """The token's claims if it is sealed by us, unexpired, and `client`'s."""
        claims = unseal(self.settings.auth_secret, token)
        if claims is None or claims.expires <= time.time():
            return None
        if claims.client != client_tag(self.settings.auth_secret, client):
            return None
        return claims

    async def user_for(
        self, token: str, client: ApiClient | None, now: float | None = None
    ) -> User | None:
        """The user an access token belongs to, or None if it does not count (for
        `client`); its last use is noted (`read_token`)."""
        claims = self._claims(token, client)
        if claims is None:
            return None
        found = await read_token(self.redis, claims, now)
        if not counts(claims, found):
            return None
        return unpack_record(claims.user_id, str(found[0]))

    async def revoke(self, token: str, client: ApiClient | None) -> bool:
        """End one access token; False if it did not count."""
        claims = self._claims(token, client)
        if claims is None:
            return False
        uid = claims.user_id
        args: list[str | int] = [claims.token_id, claims.generation, claims.expires,
                              int(time.time())]
        with unavailable_on_error():
            if client is None:  # the open API: no one to tell
                ended = await self._revoke(keys=[keys.user(uid)], args=args)
                return bool(int(ended))
            # token.revoked, appended by the script when the token ends (it puts the
            # user's record in the data)
            args += [uid, *event_args("token.revoked", client.name,
                                      {"session": claims.token_id})]
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_wake(pipe, uid)  # before the script (shared.events)
                await self._revoke(keys=[keys.user(uid), keys.events(uid)], args=args,
                                   client=pipe)
                _, ended = await pipe.execute()
        return bool(int(ended))

    async def logout(self, user_id: int) -> int:
        """End every access token of a user and void the user's code; how many tokens
        were live."""
        # the generation first: a code an issue writes after it reads the new one and is
        # voided there; one written before is found by void_all
        args: list[str | int] = [int(time.time()), self.settings.token_ttl_seconds]
        names = [client.name for client in self.settings.api_keys]
        with unavailable_on_error():
            if not names:  # the open API: no one to tell
                ended = await self._logout(keys=[keys.user(user_id)], args=args)
            else:
                # user.logged_out, one per API client among the ended sessions, appended
                # by the script in the same step; one wake for them all
                async with self.redis.pipeline(transaction=False) as pipe:
                    queue_wake(pipe, user_id)  # before the script (shared.events)
                    await self._logout(
                        keys=[keys.user(user_id), keys.events(user_id)],
                        args=[*args, user_id, now_ms(), *names], client=pipe,
                    )
                    _, ended = await pipe.execute()
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
        self, user: User, generation: int, client: ApiClient | None, address: str = ""
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
                args=[token_id, now // 1000 + ttl, now // 1000, ttl, "", generation,
                      field_tail(address, client=client.name if client else "")],
            )
        return make_token(self.settings, uid, generation, client, token_id, now)

    # -- /sessions ---------------------------------------------------------------------------

    async def listed(self, user_id: int, now: float | None = None) -> list[Listed]:
        """The user's live sessions, newest first: each listed API token, and each OpenID
        Connect token family once (its newest access token, last used when any of them
        was)."""
        when = time.time() if now is None else now
        with unavailable_on_error():
            fields = await self.redis.hgetall(keys.user(user_id))
        families: dict[str, list[Listed]] = {}
        found: list[Listed] = []
        for name, value in fields.items():
            listed = None if name in ("r", "g") else parse_field(str(name), str(value))
            if listed is None or listed.expires <= when:
                continue
            if listed.family:
                families.setdefault(listed.family, []).append(listed)
            else:
                found.append(listed)
        for family in families.values():
            newest = max(family, key=lambda s: s.expires)
            last = max((s.last_used for s in family if s.last_used is not None), default=None)
            found.append(dataclasses.replace(newest, last_used=last))
        found.sort(key=lambda s: (s.began or 0, s.last_used or 0, s.token_id), reverse=True)
        return found

    async def end(self, user_id: int, token_id: str, now: float | None = None) -> Ended | None:
        """End one session of the user (its token at once; an OIDC session's whole token
        family): what its `session.ended` event needs, or None when it was not live
        (ended before, expired, or not the user's)."""
        when = int(time.time() if now is None else now)
        key = keys.user(user_id)
        with unavailable_on_error():
            value, record = await self.redis.hmget(key, [token_id, "r"])
            listed = parse_field(token_id, str(value)) if value is not None else None
            if listed is None:
                return None
            family = [keys.oidc_family(user_id, listed.family)] if listed.family else []
            # session.ended, appended by the script when it ends the session: an API
            # client's only (OIDC clients have no event stream yet; the open API has no
            # one to tell)
            client = "" if listed.family else api_client_name(self.settings, listed.client)
            if not client:
                answer = await self._end(keys=[key, keys.events(user_id), *family],
                                         args=[token_id, when])
            else:
                user = (unpack_record(user_id, str(record)) if record is not None
                        else public_user({"id": user_id}))
                async with self.redis.pipeline(transaction=False) as pipe:
                    queue_wake(pipe, user_id)  # before the script (shared.events)
                    await self._end(
                        keys=[key, keys.events(user_id)],
                        args=[token_id, when, *event_args(
                            "session.ended", client, {"user": user, "session": token_id})],
                        client=pipe,
                    )
                    _, answer = await pipe.execute()
        if not int(answer[0]):
            return None
        ended = parse_field(token_id, str(answer[1])) or listed
        return Ended(user_id=user_id, session=ended, oidc_client_id=str(answer[2]))

