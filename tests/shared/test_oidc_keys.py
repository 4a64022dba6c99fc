"""shared.oidc_keys: the JWKS, stable key ids, RS256 signing and verifying, the attacks a
JWT verifier must refuse, rotation, and the key file `make run` makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from shared.oidc_keys import (
    InvalidToken,
    KeyFileError,
    SigningKeys,
    write_new_key_file,
)
from tests.fixtures.oidc import pem

CLAIMS = {"iss": "https://id.example.com", "sub": "1001", "aud": "shop", "exp": 2_000_000_000}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _native(n: int) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem(n), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _thumbprint(n: int) -> str:
    """RFC 7638 by hand: SHA-256 of the required members, sorted, no spaces."""
    numbers = _native(n).public_key().public_numbers()

    def member(value: int) -> str:
        return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    canonical = json.dumps(
        {"e": member(numbers.e), "kty": "RSA", "n": member(numbers.n)},
        separators=(",", ":"), sort_keys=True,
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def test_jwks_has_public_parts_only() -> None:
    keys = SigningKeys.from_pem(pem(0) + pem(1))
    jwks = keys.jwks()
    assert [sorted(jwk) for jwk in jwks["keys"]] == [sorted(["kty", "n", "e", "kid", "use",
                                                            "alg"])] * 2
    for jwk, n in zip(jwks["keys"], (0, 1), strict=True):
        assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "sig", "RS256")
        assert jwk["kid"] == _thumbprint(n)
        assert jwk["e"] == "AQAB"
    # nothing private anywhere in the document
    text = json.dumps(jwks)
    for member in ("\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""):
        assert member not in text
    # a standard library reads it as a key set of public keys
    imported = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    assert [key.kid for key in imported] == list(keys.kids)
    assert not any(key.is_private for key in imported)


def test_kids_are_stable_across_loads_and_places() -> None:
    first = SigningKeys.from_pem(pem(0) + pem(1))
    again = SigningKeys.from_pem(pem(0) + pem(1))
    swapped = SigningKeys.from_pem(pem(1) + pem(0))
    assert first.kids == again.kids == (_thumbprint(0), _thumbprint(1))
    assert swapped.kids == (_thumbprint(1), _thumbprint(0))
    assert first.signing_kid == _thumbprint(0) and swapped.signing_kid == _thumbprint(1)


def test_sign_and_verify_round_trip() -> None:
    keys = SigningKeys.from_pem(pem(0))
    token = keys.sign(CLAIMS)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "RS256", "kid": keys.signing_kid}
    assert keys.verify(token) == CLAIMS
    # and a standard library verifies it against the published JWKS alone
    published = KeySet.import_key_set(keys.jwks())  # type: ignore[arg-type]
    assert jwt.decode(token, published, algorithms=["RS256"]).claims == CLAIMS


def test_a_tampered_token_is_refused() -> None:
    keys = SigningKeys.from_pem(pem(0))
    header, _, signature = keys.sign(CLAIMS).split(".")
    forged = f"{header}.{_json_b64({**CLAIMS, 'sub': '1002'})}.{signature}"
    with pytest.raises(InvalidToken):
        keys.verify(forged)
    for broken in ("", "a.b", "a.b.c", "...", keys.sign(CLAIMS)[:-4], "x" * 50):
        with pytest.raises(InvalidToken):
            keys.verify(broken)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    keys = SigningKeys.from_pem(pem(0))
    for header in ({"alg": alg}, {"alg": alg, "kid": keys.signing_kid, "typ": "JWT"}):
        unsigned = f"{_json_b64(header)}.{_json_b64(CLAIMS)}."
        with pytest.raises(InvalidToken):
            keys.verify(unsigned)


def test_hs256_with_the_public_key_as_secret_is_refused() -> None:
    """The key-confusion attack: HMAC keyed with the public key every client can read."""
    keys = SigningKeys.from_pem(pem(0))
    public = _native(0).public_key()
    secrets = [
        public.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        json.dumps(keys.jwks()["keys"][0]).encode(),
    ]
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        for secret in secrets:
            header = _json_b64({"alg": alg, "kid": keys.signing_kid, "typ": "JWT"})
            signing_input = f"{header}.{_json_b64(CLAIMS)}"
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            with pytest.raises(InvalidToken):
                keys.verify(f"{signing_input}.{_b64(mac)}")


def test_other_rsa_algorithms_are_refused() -> None:
    """RS256 only: the same key signing PS256 or RS512 is not accepted either."""
    keys = SigningKeys.from_pem(pem(0))
    private = RSAKey.import_key(pem(0))
    for alg in ("PS256", "RS512"):
        token = jwt.encode({"alg": alg, "kid": keys.signing_kid}, CLAIMS, private,
                           algorithms=[alg])
        with pytest.raises(InvalidToken):
            keys.verify(token)


def test_a_token_signed_by_a_key_not_in_the_file_is_refused() -> None:
    ours = SigningKeys.from_pem(pem(0))
    theirs = SigningKeys.from_pem(pem(2))
    with pytest.raises(InvalidToken):  # their own kid: not published here
        ours.verify(theirs.sign(CLAIMS))
    # their key, claiming our kid: the signature does not match our key
    header = _json_b64({"alg": "RS256", "kid": ours.signing_kid, "typ": "JWT"})
    signing_input = f"{header}.{_json_b64(CLAIMS)}"
    signature = _native(2).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidToken):
        ours.verify(f"{signing_input}.{_b64(signature)}")
    # no kid at all: never guessed, even with a single key
    no_kid = jwt.encode({"alg": "RS256"}, CLAIMS, RSAKey.import_key(pem(0)),
                        algorithms=["RS256"])
    with pytest.raises(InvalidToken):
        ours.verify(no_kid)


def test_rotation_the_first_key_signs_and_both_verify() -> None:
    before = SigningKeys.from_pem(pem(0))
    old_token = before.sign(CLAIMS)
    # the operator puts the new key first and keeps the previous one after it
    during = SigningKeys.from_pem(pem(1) + pem(0))
    new_token = during.sign(CLAIMS)
    assert during.signing_kid == _thumbprint(1) != before.signing_kid
    assert during.verify(old_token) == during.verify(new_token) == CLAIMS
    assert [jwk["kid"] for jwk in during.jwks()["keys"]] == [_thumbprint(1), _thumbprint(0)]
    # once the old key's tokens have expired it leaves the file, and its tokens stop
    after = SigningKeys.from_pem(pem(1))
    assert after.verify(new_token) == CLAIMS
    with pytest.raises(InvalidToken):
        after.verify(old_token)


def test_repr_names_the_kids_only() -> None:
    keys = SigningKeys.from_pem(pem(0))
    assert repr(keys) == f"SigningKeys(kids=('{keys.signing_kid}',))"


def test_no_keys_is_an_error() -> None:
    with pytest.raises(KeyFileError, match="holds no RSA private key"):
        SigningKeys([])


def test_a_new_key_file_is_private_and_made_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "signing-key.pem"
    assert write_new_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    keys = SigningKeys.from_file(path)
    assert _native_bits(first) == 3072 and len(keys.kids) == 1
    assert not write_new_key_file(path)  # kept: a restart signs with the same key
    assert path.read_bytes() == first


def test_a_new_key_file_is_private_under_any_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "signing-key.pem"
        write_new_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _native_bits(data: bytes) -> int:
    key = serialization.load_pem_private_key(data, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.key_size
