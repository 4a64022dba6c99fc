"""OpenID Connect grants: authorization codes, and refresh-token families that rotate.

Rules of this module (issue 9, item 5; OAuth 2.0 Security BCP, RFC 9700):
- An authorization code is 256 random bits, URL-safe; Redis holds only its keyed hash
  (`keys.oidc_code`). It counts for OIDC_CODE_TTL_SECONDS, once: `redeem` checks the
  client, the redirect URI and the PKCE S256 verifier (RFC 7636) and spends the code
  in the same atomic step whatever the outcome, so a wrong guess costs the code.
- A code redeemed a second time is `InvalidGrant`, and the token family its first
  redeem started is revoked (RFC 9700 4.2.1): its refresh token and every access token
  it issued stop counting.
- Each redeem starts a family: a refresh token that rotates on every `refresh` (the
  old one stops working); presenting one already rotated revokes the whole family.
- Everything is bound to the user's session generation (`keys.user` field `g`), as the
  API's access tokens are: /logout ends every family and every access token at once.
- Access tokens are the API's own sealed tokens (`shared.tokens.seal`), one way to make
  tokens: the same generation, the same revocation list in the user's hash, the same
  /logout count. Only their client tag differs (`oidc_client_tag`, a keyed hash in its
  own namespace), so an OIDC token never counts for an API client or the other way.
  The tag also says whether the grant's scope holds `profile` (a namespace of its own),
  so userinfo answers the profile claims only to a token granted them, with nothing
  more in the token or in Redis.
- Revocation (RFC 7009): `revoke_refresh` ends a refresh token's whole family (its
  access tokens too, RFC 7009 2.1), `revoke_access` one access token (marked revoked in
  the user's hash, as `shared.sessions` revokes an API token); both change nothing for
  a token of another client and say so (`Revoked.OTHER_CLIENT`).
- A refresh token is sealed too (`tgr_`: user id, family id, rotation number, a MAC
  keyed with AUTH_SECRET); Redis holds the family under a keyed hash of its id and the
  current rotation number, nothing from which a token could be made.
- A grant's keys are tagged by the user (`{u<id>}`): each operation is one script in
  one Cluster slot. A code carries its user id encrypted (XOR with a keyed hash of its
  random part), so the code in a browser's address bar does not show the Telegram id.
- Every Redis failure is `Unavailable` (`unavailable_on_error`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.codes import User, pack_record, unpack_record
from shared.hashing import b64url, keyed, short_digest, unb64url
from shared.redis import scripts, unavailable_on_error
from shared.sessions import counts, read_token
from shared.settings import Secret, Settings
from shared.tokens import Claims, field_tail, new_token_id, seal, tag, unseal

# an OIDC access token counts this long (s); a refresh gets a new one
ACCESS_TTL_SECONDS = 3600
REFRESH_PREFIX = "tgr_"
_CODE_RANDOM_BYTES = 32  # 256 bits
_UID = struct.Struct(">q")
# version, user id, family id, rotation number
_REFRESH = struct.Struct(">Bq16sI")
_REFRESH_VERSION = 1
_MAC_BYTES = 16
# RFC 7636 4.1: 43-128 characters of the unreserved set; an S256 challenge is 43
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class _Answer(IntEnum):
    """The first element of what oidc_code_redeem.lua and oidc_refresh.lua answer."""

    REFUSED = 0
    ISSUED = 1
    REUSED = 2  # spent or rotated before: revoke the family


class Revoked(IntEnum):
    """What a revocation did."""

    NOTHING = 0  # no such token counts (unknown, malformed, expired, revoked, ended)
    ENDED = 1
    OTHER_CLIENT = 2  # an unexpired token of another client: left as it is


class InvalidGrant(Exception):
    """OAuth `invalid_grant`: the code or refresh token is unknown, expired, spent,
    revoked, or not for this client, redirect URI or verifier (never said which)."""


@dataclass(frozen=True)
class Grant:
    """What a redeem or refresh issued, and what an ID token needs."""

    user: User
    client_id: str
    scope: str
    nonce: str | None  # the authorization request's; None on a refresh
    auth_time: int  # unix s: when the user approved in the bot
    access_token: str
    expires_in: int
    refresh_token: str


def s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), no padding."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def oidc_client_tag(secret: Secret, client_id: str, profile: bool = False) -> str:
    """The client tag of an OIDC client's access tokens: apart from the API clients'
    (`shared.tokens.client_tag`), whose hash has another purpose; and apart for tokens
    whose grant's scope holds `profile`."""
    return tag(secret, "oidc-token-client-profile" if profile else "oidc-token-client",
               client_id)


def has_profile(scope: str) -> bool:
    """Whether a grant's scope asks for the profile claims (OIDC Core 5.4)."""
    return "profile" in scope.split()


@dataclass(frozen=True)
class Access:
    """Who an access token that counts was issued to, for whom, for what."""

    client_id: str
    user: User
    profile: bool  # its grant's scope holds `profile`


class OidcGrants:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.secret = settings.auth_secret
        registry = scripts(redis)
        self._create = registry.get("oidc_code_create.lua")
        self._redeem = registry.get("oidc_code_redeem.lua")
        self._refresh = registry.get("oidc_refresh.lua")
        self._revoke = registry.get("oidc_family_revoke.lua")
        self._revoke_token = registry.get("token_revoke.lua")

    # -- codes ------------------------------------------------------------------------------

    def _pad(self, random_part: bytes) -> bytes:
        return keyed(self.secret, b"oidc-code-user:" + random_part).digest()[: _UID.size]

    def _code_key(self, code: str) -> str | None:
        raw = unb64url(code) if len(code) < 64 else None
        if raw is None or len(raw) != _CODE_RANDOM_BYTES + _UID.size:
            return None
        random_part, hidden = raw[:_CODE_RANDOM_BYTES], raw[_CODE_RANDOM_BYTES:]
        (uid,) = _UID.unpack(bytes(a ^ b for a, b in zip(hidden, self._pad(random_part),
                                                            strict=True)))
        return keys.oidc_code(uid, short_digest(self.secret, "oidc-code", code))

    async def create(
        self, client_id: str, redirect_uri: str, code_challenge: str, nonce: str | None,
        user: User, auth_time: int, scope: str, generation: int | None = None,
    ) -> str:
        """A new authorization code for `user`, approved at `auth_time`, for this client,
        redirect URI and S256 `code_challenge`. With `generation` (the user's session
        generation when they approved), `InvalidGrant` if a /logout has moved it since."""
        if not _CHALLENGE.fullmatch(code_challenge):
            raise ValueError("code_challenge must be an S256 challenge (43 base64url chars)")
        uid = int(user["id"])
        random_part = secrets.token_bytes(_CODE_RANDOM_BYTES)
        hidden = bytes(a ^ b for a, b in zip(_UID.pack(uid), self._pad(random_part), strict=True))
        code = b64url(random_part + hidden)
        key = keys.oidc_code(uid, short_digest(self.secret, "oidc-code", code))
        expiry = int(time.time() * 1000) + keys.OIDC_CODE_TTL_SECONDS * 1000
        with unavailable_on_error():
            stored = await self._create(
                keys=[key, keys.user(uid)],
                args=[client_id, redirect_uri, code_challenge, nonce or "", scope, auth_time,
                      pack_record(user), expiry, keys.OIDC_CODE_TTL_SECONDS + 1,
                      "" if generation is None else generation],
            )
        if not int(stored):
            raise InvalidGrant()
        return code

    async def redeem(
        self, code: str, client_id: str, redirect_uri: str, code_verifier: str,
        address: str = "",
    ) -> Grant:
        """The tokens for a code, once; `InvalidGrant` for anything else. A code
        presented again revokes what its first redeem issued. `address` (the token
        request's) lists the session's network (`shared.tokens.field_tail`)."""
        key = self._code_key(code)
        if key is None:
            raise InvalidGrant()
        uid = _uid_of(key)
        challenge = s256(code_verifier) if _VERIFIER.fullmatch(code_verifier) else ""
        family_id = secrets.token_bytes(16)
        family_hash = self._family_hash(family_id)
        token_id, now = new_token_id(), int(time.time())
        expires = now + ACCESS_TTL_SECONDS
        with unavailable_on_error():
            answer = await self._redeem(
                keys=[key, keys.user(uid), keys.oidc_family(uid, family_hash)],
                args=[int(time.time() * 1000), client_id, redirect_uri, challenge,
                      family_hash, token_id, expires, self.settings.token_ttl_seconds,
                      self._tail(address, family_hash, client_id)],
            )
        if answer[0] == _Answer.REUSED:
            await self._revoke_family(uid, str(answer[1]))
        if answer[0] != _Answer.ISSUED:
            raise InvalidGrant()
        _, generation, nonce, scope, auth_time, record = answer
        return self._grant(uid, client_id, family_id, 0, int(generation), token_id, expires,
                           scope, auth_time, record, nonce=str(nonce) or None)

    def _tail(self, address: str, family_hash: str, client_id: str) -> str:
        """The end of the access token's field in the user's hash: the request's network,
        the family (so /sessions ends it whole), the client's name."""
        oidc = self.settings.oidc
        client = oidc.client(client_id) if oidc is not None else None
        return field_tail(address, family_hash, client.name if client else client_id)

    # -- refresh tokens ---------------------------------------------------------------------

    def _family_hash(self, family_id: bytes) -> str:
        return short_digest(self.secret, "oidc-family", family_id.hex())

    def _refresh_mac(self, payload: bytes) -> bytes:
        return keyed(self.secret, b"oidc-refresh:" + payload).digest()[:_MAC_BYTES]

    def _seal_refresh(self, uid: int, family_id: bytes, rotation: int) -> str:
        payload = _REFRESH.pack(_REFRESH_VERSION, uid, family_id, rotation)
        return REFRESH_PREFIX + b64url(payload + self._refresh_mac(payload))

    def _unseal_refresh(self, token: str) -> tuple[int, bytes, int] | None:
        if not token.startswith(REFRESH_PREFIX) or len(token) > 128:
            return None
        raw = unb64url(token[len(REFRESH_PREFIX):])
        if raw is None or len(raw) != _REFRESH.size + _MAC_BYTES:
            return None
        payload, mac = raw[: _REFRESH.size], raw[_REFRESH.size:]
        if not hmac.compare_digest(mac, self._refresh_mac(payload)):
            return None
        version, uid, family_id, rotation = _REFRESH.unpack(payload)
        if version != _REFRESH_VERSION:
            return None
        return uid, family_id, rotation

    async def refresh(self, refresh_token: str, client_id: str, address: str = "") -> Grant:
        """A new access token and the next refresh token; the presented one stops
        working. One already rotated revokes its family; `InvalidGrant` either way."""
        unsealed = self._unseal_refresh(refresh_token)
        if unsealed is None:
            raise InvalidGrant()
        uid, family_id, rotation = unsealed
        family_hash = self._family_hash(family_id)
        token_id, now = new_token_id(), int(time.time())
        expires = now + ACCESS_TTL_SECONDS
        with unavailable_on_error():
            answer = await self._refresh(
                keys=[keys.oidc_family(uid, family_hash), keys.user(uid)],
                args=[client_id, rotation, token_id, expires, now,
                      self.settings.token_ttl_seconds,
                      self._tail(address, family_hash, client_id)],
            )
        if answer[0] == _Answer.REUSED:
            await self._revoke_family(uid, family_hash)
        if answer[0] != _Answer.ISSUED:
            raise InvalidGrant()
        _, next_rotation, generation, scope, auth_time, record = answer
        return self._grant(uid, client_id, family_id, int(next_rotation), int(generation),
                           token_id, expires, scope, auth_time, record, nonce=None)

    async def _revoke_family(
        self, uid: int, family_hash: str, client_id: str = ""
    ) -> Revoked:
        """End a family (of `client_id` only, when given) and its access tokens."""
        with unavailable_on_error():
            status, _ = await self._revoke(
                keys=[keys.oidc_family(uid, family_hash), keys.user(uid)],
                args=[int(time.time()), client_id],
            )
        return Revoked(int(status))

    async def revoke_refresh(self, refresh_token: str, client_id: str) -> Revoked:
        """RFC 7009 for a refresh token of `client_id`: its family ends, the access
        tokens it issued with it. A rotated one ends the family too (its holder asks
        for it to end). Another client's family is left as it is."""
        unsealed = self._unseal_refresh(refresh_token)
        if unsealed is None:
            return Revoked.NOTHING
        uid, family_id, _ = unsealed
        return await self._revoke_family(uid, self._family_hash(family_id), client_id)

    # -- access tokens ----------------------------------------------------------------------

    def _grant(
        self, uid: int, client_id: str, family_id: bytes, rotation: int, generation: int,
        token_id: str, expires: int, scope: Any, auth_time: Any, record: Any,
        *, nonce: str | None,
    ) -> Grant:
        tag = oidc_client_tag(self.secret, client_id, has_profile(str(scope)))
        access = seal(self.secret, Claims(uid, expires, generation, token_id, tag))
        return Grant(
            user=unpack_record(uid, str(record)), client_id=client_id, scope=str(scope),
            nonce=nonce, auth_time=int(auth_time), access_token=access,
            expires_in=ACCESS_TTL_SECONDS,
            refresh_token=self._seal_refresh(uid, family_id, rotation),
        )

    def _sealed(
        self, token: str, client_ids: tuple[str, ...]
    ) -> tuple[str, bool, Claims] | None:
        """(client id, profile, claims) of an unexpired OIDC access token we sealed for
        one of `client_ids`; no Redis asked."""
        claims = unseal(self.secret, token)
        if claims is None or claims.expires <= time.time():
            return None
        for client_id in client_ids:
            for profile in (False, True):
                if hmac.compare_digest(oidc_client_tag(self.secret, client_id, profile),
                                       claims.client):
                    return client_id, profile, claims
        return None

    async def access(self, token: str, client_ids: tuple[str, ...]) -> Access | None:
        """What an OIDC access token that still counts is for (sealed by us, unexpired,
        for one of `client_ids`, at the user's generation, not revoked); else None."""
        sealed = self._sealed(token, client_ids)
        if sealed is None:
            return None
        client_id, profile, claims = sealed
        # one round trip, noting the token's use for /sessions (as `shared.sessions`)
        found = await read_token(self.redis, claims)
        if not counts(claims, found):
            return None  # unlisted (past 256) counts, as in `shared.sessions`
        return Access(client_id, unpack_record(claims.user_id, str(found[0])), profile)

    async def access_user(
        self, token: str, client_ids: tuple[str, ...]
    ) -> tuple[str, User] | None:
        """The client and user of an OIDC access token that still counts (`access`)."""
        found = await self.access(token, client_ids)
        return None if found is None else (found.client_id, found.user)

    async def revoke_access(
        self, token: str, client_id: str, client_ids: tuple[str, ...]
    ) -> Revoked:
        """RFC 7009 for an access token of `client_id` (one of `client_ids`, the
        configured clients): it stops counting at once, marked revoked in the user's
        hash until it would have expired (as `shared.sessions` revokes an API token).
        Another configured client's token is left as it is; anything else is NOTHING."""
        sealed = self._sealed(token, client_ids)
        if sealed is None:
            return Revoked.NOTHING
        owner, _, claims = sealed
        if owner != client_id:
            return Revoked.OTHER_CLIENT
        with unavailable_on_error():
            ended = await self._revoke_token(
                keys=[keys.user(claims.user_id)],
                args=[claims.token_id, claims.generation, claims.expires, int(time.time())],
            )
        return Revoked.ENDED if int(ended) else Revoked.NOTHING


def _uid_of(key: str) -> int:
    """The user id in a key tagged `{u<id>}`."""
    return int(key[key.index("{u") + 2: key.index("}")])
