"""OpenID Connect signing keys: the operator's RSA keys, their JWKS, RS256 JWTs.

Rules:
- `OIDC_SIGNING_KEY_FILE` is a PEM file of one or more RSA private keys (PKCS#1
  `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`, unencrypted), each at least
  MIN_RSA_BITS; every API process reads the same file, so all sign alike.
- The first key signs; every key is published, so tokens signed by a previous key
  still verify while it stays in the file (rotation: README "OpenID Connect").
- A key's `kid` is its RFC 7638 thumbprint: the same key has the same `kid` in every
  process and after every restart, whatever its place in the file.
- The JWKS carries public parts only (`kty`, `n`, `e`, `kid`, `use`, `alg`).
- Tokens are signed and verified with RS256 alone (joserfc's registry refuses every
  other `alg`, `none` and HS256 among them) and must name a published `kid`.

Nothing here is hand-rolled: joserfc does JWS/JWK/JWT, `cryptography` the RSA.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

ALGORITHM = "RS256"  # the one ID tokens are signed with (mandatory to implement in OIDC)
MIN_RSA_BITS = 2048
GENERATED_RSA_BITS = 3072  # `make run`'s key: NIST's size for use beyond 2030
# the public members of an RSA JWK, and the ones we add
_PUBLIC_MEMBERS = ("kty", "n", "e", "kid", "use", "alg")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL
)
_PRIVATE_BLOCKS = (b"RSA PRIVATE KEY", b"PRIVATE KEY")
# verifying: RS256 only; joserfc refuses `none` and every other algorithm before any key
_REGISTRY = JWSRegistry(algorithms=[ALGORITHM])


class KeyFileError(ValueError):
    """The signing key file cannot be used (the message says why, never the key)."""


class InvalidToken(Exception):
    """A JWT that is malformed, not RS256, signed by no published key, or tampered."""


class SigningKeys:
    """The operator's keys: the first signs, all verify and are published."""

    __slots__ = ("_jwks", "_signing", "_verifying")

    def __init__(self, private_keys: list[rsa.RSAPrivateKey]) -> None:
        if not private_keys:
            raise KeyFileError("holds no RSA private key")
        signing: list[RSAKey] = []
        for native in private_keys:
            pem = _pkcs8(native)
            kid = RSAKey.import_key(pem).thumbprint()  # RFC 7638
            key = RSAKey.import_key(pem, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})
            if any(key.kid == other.kid for other in signing):
                raise KeyFileError(f"holds the key {key.kid} twice")
            signing.append(key)
        self._signing = signing[0]
        public = [{m: key.as_dict(private=False)[m] for m in _PUBLIC_MEMBERS} for key in signing]
        self._verifying = {str(jwk["kid"]): RSAKey.import_key(dict(jwk)) for jwk in public}
        self._jwks: dict[str, Any] = {"keys": public}

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKeys:
        """The keys of a PEM file's text; `KeyFileError` says what is wrong with it."""
        blocks = list(_PEM_BLOCK.finditer(data))
        if not blocks:
            raise KeyFileError("holds no PEM key (-----BEGIN PRIVATE KEY----- ...)")
        keys: list[rsa.RSAPrivateKey] = []
        for n, block in enumerate(blocks, 1):
            label = block.group(1)
            if label not in _PRIVATE_BLOCKS:
                hint = " (encrypted keys are not read: store it without a passphrase, " \
                       "readable by the API's user alone)" if b"ENCRYPTED" in label else ""
                raise KeyFileError(
                    f"key {n} is a {label.decode()}, not an RSA private key{hint}"
                )
            try:
                native = serialization.load_pem_private_key(block.group(0), password=None)
            except (ValueError, TypeError) as exc:
                raise KeyFileError(f"key {n} cannot be read: {_reason(exc)}") from None
            if not isinstance(native, rsa.RSAPrivateKey):
                raise KeyFileError(f"key {n} is not an RSA key (ID tokens are signed RS256)")
            if native.key_size < MIN_RSA_BITS:
                raise KeyFileError(
                    f"key {n} has {native.key_size} bits; at least {MIN_RSA_BITS} are needed"
                )
            keys.append(native)
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKeys:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot be read: {exc.strerror or exc}") from None
        return cls.from_pem(data)

    def __repr__(self) -> str:
        return f"SigningKeys(kids={self.kids!r})"  # never the keys

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key's id, the signing key's first."""
        return tuple(str(jwk["kid"]) for jwk in self._jwks["keys"])

    @property
    def algorithm(self) -> str:
        """What every token is signed with (the discovery document says it)."""
        return ALGORITHM

    @property
    def signing_kid(self) -> str:
        return str(self._signing.kid)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set to publish: every key's public part."""
        return {"keys": [dict(jwk) for jwk in self._jwks["keys"]]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWT of `claims`, signed RS256 by the first key, naming its `kid`."""
        header = {"alg": ALGORITHM, "kid": self.signing_kid, "typ": "JWT"}
        return jwt.encode(header, dict(claims), self._signing, registry=_REGISTRY)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a JWT signed RS256 by one of these keys, whose header names
        that key's `kid`; else `InvalidToken`. Claims (exp, iss, aud ...) are the
        caller's to check."""
        try:
            decoded = jwt.decode(token, self._key_for, registry=_REGISTRY)
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise InvalidToken(type(exc).__name__) from None
        if decoded.header.get("alg") != ALGORITHM:  # the registry refuses it already
            raise InvalidToken("alg")
        return dict(decoded.claims)

    def _key_for(self, obj: Any) -> RSAKey:
        """The published key the token's header names; none without a `kid`."""
        kid = obj.headers().get("kid")
        key = self._verifying.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("kid")
        return key


def _pkcs8(native: rsa.RSAPrivateKey) -> bytes:
    return native.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _reason(exc: Exception) -> str:
    """cryptography's reason, first line only (its messages can run to a paragraph)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def generate_pem(bits: int = GENERATED_RSA_BITS) -> bytes:
    """A fresh RSA private key as PKCS#8 PEM."""
    return _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def write_new_key_file(path: Path) -> bool:
    """Create `path` (mode 0600) with a fresh key unless it exists; True if written.

    The file is created with O_EXCL, readable by the user alone from its first byte;
    an existing file is kept, so a restart signs with the same key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(generate_pem())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True
