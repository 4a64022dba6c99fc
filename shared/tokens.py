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
- per token id its field (below), or "-<expiry>" once revoked (until it would have
  expired anyway); the live ids also let `/logout` say how many sessions it
  ended, and `/sessions` list them.

A live token's field is "<expiry>|<lifetime>|<used>|<network>[|<family>[|<client>]]":
its expiry (unix s, first, so every script finds it as the leading number), how many
minutes before it the session began, in which minute after that it was last used (the
scripts move it on at most once a minute), the network the request that obtained it
came from (`network`: an IPv4 /24 or IPv6 /48, never the whole address), the OpenID
Connect token family it belongs to, and the client's name as it was then (API_KEYS
name, or the OIDC client's), cut so the field stays within Redis's 64-byte listpack
value. About 24 bytes for an open API's token from an IPv4 address.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import struct
from dataclasses import dataclass

from shared.addresses import dotted_quad, parse_ip
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


# -- a listed token's field in the user's hash -----------------------------------------------

# what follows "<expiry>|<lifetime>|<used>|": the field stays within 64 B while both
# counts of minutes have at most 5 digits (token lifetimes up to 69 days)
_TAIL_BYTES = 41
_V4_BYTES, _V6_BYTES = 3, 6  # an IPv4 /24, an IPv6 /48


def network(address: str) -> str:
    """The network a client address belongs to, compactly (base64url of its first 3
    bytes for IPv4, 6 for IPv6; an IPv4-mapped IPv6 address is IPv4); "" for anything
    that is not an IP address."""
    quad = dotted_quad(address)
    if quad is not None:
        return b64url(quad[:_V4_BYTES])
    ip = parse_ip(address)
    if ip is None:
        return ""
    size = _V4_BYTES if ip.version == 4 else _V6_BYTES
    return b64url(ip.packed[:size])


def network_text(packed: str) -> str:
    """What `network` made, as people write it ("192.0.2.0/24", "2001:db8:1::/48");
    "" when unknown."""
    raw = unb64url(packed) if packed else None
    if raw is not None and len(raw) == _V4_BYTES:
        return f"{ipaddress.IPv4Address(raw + bytes(1))}/24"
    if raw is not None and len(raw) == _V6_BYTES:
        return f"{ipaddress.IPv6Address(raw + bytes(10))}/48"
    return ""


def field_tail(address: str, family: str = "", client: str = "") -> str:
    """The end of a listed token's field: "<network>[|<family>[|<client name>]]", the
    name cut (whole characters) so it fits."""
    head = network(address) + (f"|{family}" if family or client else "")
    if not client:
        return head
    room = _TAIL_BYTES - len(head.encode()) - 1
    name = client.encode()[: max(room, 0)].decode(errors="ignore")
    return f"{head}|{name}"


@dataclass(frozen=True)
class Listed:
    """A live token as its field lists it."""

    token_id: str
    expires: int  # unix s
    began: int | None  # unix s; None for a field from before sessions were recorded
    last_used: int | None  # unix s, to the minute
    network: str  # "192.0.2.0/24", "2001:db8:1::/48", or ""
    family: str  # the OIDC token family's hash; "" for an API token
    client: str  # the client's name when it began ("" for the open API)


def parse_field(token_id: str, value: str) -> Listed | None:
    """A token's field read back; None when it is revoked or not a field at all."""
    parts = value.split("|", 5)
    if not parts[0].isdigit():
        return None  # "-<expiry>": revoked
    expires = int(parts[0])
    if len(parts) < 4 or not (parts[1].isdigit() and parts[2].isdigit()):
        return Listed(token_id, expires, None, None, "", "", "")
    began = expires - int(parts[1]) * 60
    parts += [""] * (6 - len(parts))
    return Listed(token_id, expires, began, began + int(parts[2]) * 60,
                  network_text(parts[3]), parts[4], parts[5])
