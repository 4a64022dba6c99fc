"""Access tokens: signed, so that making one needs no write of its own.

A token carries who it is for, which API client obtained it, when it expires,
the user's session generation when it was made, and a random id; an
HMAC-SHA256 (keyed with AUTH_SECRET, cut to 128 bits) seals them. What Redis
holds about a token is its id in the user's hash (`keys.user`), which decides
with the rest of that hash whether a well-sealed token still counts
(`shared.sessions` and the scripts):

- the generation `g`: `/logout` raises it, which ends every token made before;
  a redeem lists its token only if the generation is still the one its code was
  issued at, in one atomic step;
- per token id its expiry, or "-<expiry>" once revoked (until it would have
  expired anyway); the live ids also let `/logout` say how many sessions it
  ended.
"""

from __future__ import annotations

import base64
import hmac
import struct
from dataclasses import dataclass

from shared.hashing import TOKEN_PREFIX, b64url, keyed, random_hex, unb64url
from shared.settings import ApiClient, Secret

_VERSION = 1
# version, user id, expiry (unix s), generation, token id, client tag
_LAYOUT = struct.Struct(">Bq I I 8s 8s")
_MAC_BYTES = 16
_ENCODED_LENGTH = len(TOKEN_PREFIX) + len(
    base64.urlsafe_b64encode(b"\0" * (_LAYOUT.size + _MAC_BYTES)).rstrip(b"=")
)


@dataclass(frozen=True)
class Claims:
    user_id: int
    expires: int  # unix seconds
    generation: int
    token_id: str  # 16 hex digits
    client: str  # 16 hex digits: `client_tag` of the API client that obtained it


_TAGS: dict[tuple[str, str, str], str] = {}


def tag(secret: Secret, kind: str, name: str) -> str:
    """The client tag sealed into a token: a keyed hash of the client's `name`, apart
    for each `kind` of client; the same few clients ask on every request, so each tag
    is made once."""
    found = _TAGS.get((secret.reveal(), kind, name))
    if found is None:
        found = keyed(secret, f"{kind}:{name}".encode()).hexdigest()[:16]
        if len(_TAGS) < 1024:  # clients come from the settings: a handful
            _TAGS[(secret.reveal(), kind, name)] = found
    return found


def client_tag(secret: Secret, client: ApiClient | None) -> str:
    """Which API client a token belongs to ("" names the open API's)."""
    return tag(secret, "token-client", "" if client is None else client.name)


def new_token_id() -> str:
    return random_hex(8)


def _mac(secret: Secret, payload: bytes) -> bytes:
    return keyed(secret, b"access-token:" + payload).digest()[:_MAC_BYTES]


def seal(secret: Secret, claims: Claims) -> str:
    """The access token for `claims`."""
    payload = _LAYOUT.pack(
        _VERSION, claims.user_id, claims.expires, claims.generation,
        bytes.fromhex(claims.token_id), bytes.fromhex(claims.client),
    )
    raw = payload + _mac(secret, payload)
    return TOKEN_PREFIX + b64url(raw)


def unseal(secret: Secret, token: str) -> Claims | None:
    """The claims of a token this deployment sealed, or None for anything else
    (expiry and the per-user state in Redis are checked by the caller)."""
    if len(token) != _ENCODED_LENGTH or not token.startswith(TOKEN_PREFIX):
        return None
    raw = unb64url(token[len(TOKEN_PREFIX):])  # one token, one spelling
    if raw is None:
        return None
    payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size:]
    if len(raw) != _LAYOUT.size + _MAC_BYTES or not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    version, user_id, expires, generation, token_id, client = _LAYOUT.unpack(payload)
    if version != _VERSION:
        return None
    return Claims(user_id, expires, generation, token_id.hex(), client.hex())
