"""Keyed hashes of codes, and the random values behind codes and ids.

Redis only ever sees `digest(...)` of a code: an HMAC-SHA256 keyed with
AUTH_SECRET, so a dump of Redis reveals none, and without the secret a code
cannot be confirmed by hashing all 10^L candidates. Access tokens are sealed,
never stored (`shared.tokens`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata

from shared.settings import Secret

TOKEN_PREFIX = "tgl_"
_SEPARATORS = re.compile(r"[\s\-]+")


def digest(secret: Secret, purpose: str, value: str) -> str:
    """The keyed hash of `value`; `purpose` keeps codes and tokens apart."""
    message = f"{purpose}:{value}".encode()
    return hmac.new(secret.reveal().encode(), message, hashlib.sha256).hexdigest()


def new_code(length: int) -> str:
    """`length` decimal digits from the operating system's cryptographic source."""
    return f"{secrets.randbelow(10**length):0{length}d}"


def code_for_update(secret: Secret, update_key: str, length: int) -> str:
    """The code an update issues: `length` digits from a keyed hash of the update.

    Handling one update again (after a crash, a takeover, a webhook retry)
    re-sends the same code instead of a second one. Without AUTH_SECRET the
    digits are as unpredictable as random ones (HMAC-SHA256 is a PRF; 128 bits
    reduced mod 10^length leave no usable bias).
    """
    mac = hmac.new(secret.reveal().encode(), f"update-code:{update_key}".encode(), hashlib.sha256)
    return f"{int.from_bytes(mac.digest()[:16], 'big') % 10**length:0{length}d}"


def normalize_code(raw: str) -> str:
    """A typed code without the spaces and dashes people put in it; full-width
    and other compatibility digits become ASCII."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))


def new_id() -> str:
    """An opaque random identifier of 128 bits, URL- and deep-link-safe."""
    return secrets.token_urlsafe(16)
