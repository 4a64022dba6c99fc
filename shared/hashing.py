"""Keyed hashes of codes, and the random values behind codes and ids.

Redis only ever sees `digest(...)` of a code: an HMAC-SHA256 keyed with
AUTH_SECRET, so a dump of Redis reveals none, and without the secret a code
cannot be confirmed by hashing all 10^L candidates. Access tokens are sealed,
never stored (`shared.tokens`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import unicodedata

from shared.settings import Secret


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 4648 5, as JOSE and tokens spell it)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes | None:
    """What `b64url` made `text` from, or None: not base64url, or not its one canonical
    spelling (the last character may carry spare bits another spelling sets)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if b64url(raw) == text else None

TOKEN_PREFIX = "tgl_"
_SEPARATORS = re.compile(r"[\s\-]+")


# HMAC-SHA256 keyed with each secret seen, ready to copy: a copy skips preparing the key
_KEYED: dict[str, hmac.HMAC] = {}


def keyed(secret: Secret, message: bytes) -> hmac.HMAC:
    """HMAC-SHA256 of `message` keyed with `secret`."""
    key = secret.reveal()
    base = _KEYED.get(key)
    if base is None:
        base = _KEYED[key] = hmac.new(key.encode(), digestmod=hashlib.sha256)
    mac = base.copy()
    mac.update(message)
    return mac


def digest(secret: Secret, purpose: str, value: str) -> str:
    """The keyed hash of `value`; `purpose` keeps codes and tokens apart."""
    return keyed(secret, f"{purpose}:{value}".encode()).hexdigest()


def slot_code(secret: Secret, user_id: int, window: int, slot: int, length: int) -> str:
    """The code in `slot` of a user's issue `window`: `length` digits from a keyed hash.

    A user's codes in one issue window are its slots 0, 1, ... in turn, so the issuer
    finds a user's codes (to count them, to void the previous one, to find the one an
    update already issued) from the user id alone, with no per-user record in Redis.
    Without AUTH_SECRET the digits are as unpredictable as random ones (HMAC-SHA256 is
    a PRF; 128 bits reduced mod 10^length leave no usable bias).
    """
    message = f"code-slot:{user_id}:{window}:{slot}".encode()
    mac = keyed(secret, message)
    return f"{int.from_bytes(mac.digest()[:16], 'big') % 10**length:0{length}d}"


def short_digest(secret: Secret, purpose: str, value: str, length: int = 22) -> str:
    """`length` characters of the keyed hash of `value`, URL-safe base64 (22 are 132
    bits): what a code's key and an update's mark are named by, short because there is
    one per live code."""
    message = f"{purpose}:{value}".encode()
    mac = keyed(secret, message).digest()
    return base64.urlsafe_b64encode(mac).decode()[:length]


def normalize_code(raw: str) -> str:
    """A typed code without the spaces and dashes people put in it; full-width
    and other compatibility digits become ASCII."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))


class _RandomPool:
    """Bytes from the operating system's cryptographic source, read 4 KiB at a time:
    a redeem needs two random ids, and a system call for each costs more than the
    rest of making them."""

    SIZE = 4096

    def __init__(self) -> None:
        self.empty()

    def empty(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._pool):
            self._pool, self._at = secrets.token_bytes(max(self.SIZE, count)), 0
        taken = self._pool[self._at:self._at + count]
        self._at += count
        return taken


_random = _RandomPool()
# a forked child must not hand out the bytes its parent holds
os.register_at_fork(after_in_child=_random.empty)


def random_hex(count: int) -> str:
    """`count` random bytes (never handed out twice) as hex."""
    return _random.take(count).hex()


def new_id() -> str:
    """An opaque random identifier of 128 bits, URL- and deep-link-safe."""
    return secrets.token_urlsafe(16)
