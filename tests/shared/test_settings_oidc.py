"""shared.settings, the OpenID Connect provider's variables: OIDC_ISSUER, OIDC_CLIENTS,
OIDC_CLIENTS_FILE, OIDC_SIGNING_KEY_FILE. Off unless clients are configured; every bad
value is one line naming the variable (and the client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.settings import SettingsError, load_settings
from tests.fixtures.oidc import CLI, ISSUER, SHOP, SHOP_SECRET, key_file, oidc_env, pem

SECRET = "x" * 32


def _load(env: dict[str, str]) -> Any:
    return load_settings(env={"AUTH_SECRET": SECRET, **env}, env_file="/nonexistent")


def _refused(env: dict[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as error:
        _load(env)
    assert str(error.value).startswith(error.value.variable + " ")
    assert "\n" not in str(error.value)
    return error.value


def test_off_unless_clients_are_configured(tmp_path: Path) -> None:
    assert _load({}).oidc is None
    # issuer and key without clients: still off (the issuer is checked all the same)
    env = oidc_env(tmp_path)
    del env["OIDC_CLIENTS"]
    assert _load(env).oidc is None


def test_clients_issuer_and_keys(tmp_path: Path) -> None:
    oidc = _load(oidc_env(tmp_path)).oidc
    assert oidc is not None
    assert oidc.issuer == ISSUER
    shop, cli = oidc.clients
    assert (shop.client_id, shop.name, shop.redirect_uris) == (
        "shop", "Shop Example", ("https://shop.example/callback",)
    )
    assert shop.confidential and shop.client_secret is not None
    assert shop.client_secret.reveal() == SHOP_SECRET
    assert not cli.confidential and cli.client_secret is None  # public: PKCE required
    assert cli.redirect_uris == ("http://127.0.0.1/callback", "http://localhost:8765/cb")
    assert oidc.client("cli") is cli and oidc.client("nobody") is None
    assert len(oidc.signing_keys.kids) == 1


@pytest.mark.parametrize(
    ("raw", "issuer"),
    [
        ("https://id.example.com/", "https://id.example.com"),
        ("https://example.com/login//", "https://example.com/login"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_issuer_is_normalised(tmp_path: Path, raw: str, issuer: str) -> None:
    oidc = _load({**oidc_env(tmp_path), "OIDC_ISSUER": raw}).oidc
    assert oidc is not None and oidc.issuer == issuer


@pytest.mark.parametrize(
    ("issuer", "says"),
    [
        ("http://id.example.com", "must be https://"),
        ("http://127.0.0.2", "must be https://"),
        ("http://localhost.example.com", "must be https://"),
        ("ftp://id.example.com", "must be an https:// URL"),
        ("id.example.com", "must be an https:// URL"),
        ("https://id.example.com/?tenant=1", "no query or fragment"),
        ("https://id.example.com/#top", "no query or fragment"),
        ("https://id.example.com:port", "is not a URL"),
        ("https://[::1", "is not a URL"),
    ],
)
def test_bad_issuers_are_refused(tmp_path: Path, issuer: str, says: str) -> None:
    error = _refused({**oidc_env(tmp_path), "OIDC_ISSUER": issuer})
    assert error.variable == "OIDC_ISSUER" and says in str(error)


def test_an_issuer_with_a_password_is_refused_without_showing_it(tmp_path: Path) -> None:
    error = _refused({**oidc_env(tmp_path), "OIDC_ISSUER": "https://u:hunter2@id.example"})
    assert error.variable == "OIDC_ISSUER" and "hunter2" not in str(error)


def test_issuer_and_key_file_are_required_with_clients(tmp_path: Path) -> None:
    env = oidc_env(tmp_path)
    assert _refused({**env, "OIDC_ISSUER": ""}).variable == "OIDC_ISSUER"
    error = _refused({**env, "OIDC_SIGNING_KEY_FILE": ""})
    assert error.variable == "OIDC_SIGNING_KEY_FILE" and "OIDC_CLIENTS" in str(error)


def _client(**fields: Any) -> dict[str, Any]:
    return {**SHOP, **fields}


@pytest.mark.parametrize(
    ("clients", "says"),
    [
        ("not json", "is not valid JSON"),
        ("{}", "must be a JSON array of at least one client"),
        ("[]", "must be a JSON array of at least one client"),
        ('["shop"]', "client 1 must be a JSON object"),
        ([_client(client_id="")], "client 1: client_id"),
        ([SHOP, _client(client_id="a b")], "client 2: client_id"),
        ([_client(client_id=7)], "client 1: client_id"),
        ([SHOP, CLI, {**CLI, "name": "Other"}], "client 'cli' is listed twice"),
        ([_client(redirect_uri=["https://shop.example/cb"])], "client 'shop': unknown field"),
        ([_client(name="")], "client 'shop': name must not be empty"),
        ([_client(name="\u202e\n\t")], "client 'shop': name must not be empty"),
        ([_client(name=None)], "client 'shop': name must be a string"),
        ([_client(name="n" * 101)], "client 'shop': name must be at most 100"),
        ([_client(redirect_uris=[])], "client 'shop': redirect_uris must be a non-empty"),
        ([_client(redirect_uris="https://shop.example/cb")], "client 'shop': redirect_uris"),
        ([_client(redirect_uris=[""])], "client 'shop': redirect_uris must be non-empty"),
        ([_client(redirect_uris=["/callback"])], "client 'shop': redirect URI '/callback'"),
        ([_client(redirect_uris=["https://shop.example/cb#x"])], "must have no fragment"),
        ([_client(redirect_uris=["https://shop.example/cb#"])], "must have no fragment"),
        ([_client(redirect_uris=["http://shop.example/cb"])], "must be https://"),
        ([_client(redirect_uris=["http://127.0.0.2/cb"])], "must be https://"),
        ([_client(redirect_uris=["http://localhost.evil.example/cb"])], "must be https://"),
        ([_client(redirect_uris=["com.example.app:/cb"])], "must be https://"),
        ([_client(redirect_uris=["javascript://x/%0aalert(1)"])], "must be https://"),
        ([_client(redirect_uris=["https://shop.example:x/cb"])], "is not a URL"),
        ([_client(redirect_uris=["https://shop.example/a b"])], "has spaces or controls"),
        ([_client(redirect_uris=["https://shop.example/\ncb"])], "has spaces or controls"),
        ([_client(redirect_uris=["https:///cb"])], "needs a host"),
        ([_client(client_secret="s" * 23)], "client 'shop': client_secret must be at least 24"),
        ([_client(client_secret="")], "client 'shop': client_secret must be at least 24"),
        ([_client(client_secret=None)], "client 'shop': client_secret must be a string"),
        ('[{"client_id": "shop", "name": "\\ud800"}]', "must be valid UTF-8 text"),
    ],
)
def test_bad_clients_name_the_variable_and_the_client(
    tmp_path: Path, clients: str | list[dict[str, Any]], says: str
) -> None:
    raw = clients if isinstance(clients, str) else json.dumps(clients)
    error = _refused({**oidc_env(tmp_path), "OIDC_CLIENTS": raw})
    assert error.variable == "OIDC_CLIENTS"
    assert says in str(error), str(error)


def test_a_redirect_uri_with_a_password_is_refused_without_showing_it(tmp_path: Path) -> None:
    raw = json.dumps([_client(redirect_uris=["https://u:hunter2@shop.example/cb"])])
    error = _refused({**oidc_env(tmp_path), "OIDC_CLIENTS": raw})
    assert "client 'shop'" in str(error) and "hunter2" not in str(error)


def test_a_short_secret_is_never_shown(tmp_path: Path) -> None:
    secret = "short-but-secret-value"
    error = _refused({**oidc_env(tmp_path), "OIDC_CLIENTS": json.dumps([_client(
        client_secret=secret)])})
    assert secret not in str(error) and "has 22" in str(error)


def test_names_lose_control_and_format_characters(tmp_path: Path) -> None:
    # a right-to-left override would show "Shop" backwards in the bot's prompt
    raw = json.dumps([_client(name="  Shop\u202e\u200b\x07 \n Example\u2028 ")])
    oidc = _load({**oidc_env(tmp_path), "OIDC_CLIENTS": raw}).oidc
    assert oidc is not None and oidc.clients[0].name == "Shop Example"


def test_redirect_uris_are_kept_exactly_and_loopback_takes_any_port(tmp_path: Path) -> None:
    uris = [
        "https://shop.example/callback?from=tglogin",
        "https://Shop.Example/Callback",
        "http://127.0.0.1:51000/cb",
        "http://[::1]:8080/",
        "http://localhost/cb",
        "https://shop.example/callback?from=tglogin",  # a repeat is kept once
    ]
    oidc = _load({**oidc_env(tmp_path), "OIDC_CLIENTS": json.dumps([_client(
        redirect_uris=uris)])}).oidc
    assert oidc is not None and oidc.clients[0].redirect_uris == tuple(uris[:5])


def test_clients_from_a_file(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([SHOP, CLI]))
    env = {**oidc_env(tmp_path), "OIDC_CLIENTS": "", "OIDC_CLIENTS_FILE": str(clients)}
    oidc = _load(env).oidc
    assert oidc is not None and [c.client_id for c in oidc.clients] == ["shop", "cli"]

    clients.write_text(json.dumps([_client(redirect_uris=["http://shop.example/cb"])]))
    error = _refused(env)
    assert error.variable == "OIDC_CLIENTS_FILE" and "client 'shop'" in str(error)
    clients.write_bytes(b"\xff[]")
    assert "UTF-8" in str(_refused(env))
    missing = _refused({**env, "OIDC_CLIENTS_FILE": str(tmp_path / "missing.json")})
    assert missing.variable == "OIDC_CLIENTS_FILE" and "cannot be read" in str(missing)


def test_clients_and_clients_file_together_are_refused(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps([SHOP]))
    error = _refused({**oidc_env(tmp_path), "OIDC_CLIENTS_FILE": str(clients)})
    assert error.variable == "OIDC_CLIENTS_FILE" and "OIDC_CLIENTS" in str(error)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, password: bytes = b"",
         fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def _bad_key_file(name: str) -> tuple[bytes, str]:
    """The file's bytes, and what the error says."""
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public = serialization.load_pem_private_key(pem(0), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    broken = pem(0)[:200] + pem(0)[-40:]  # a PEM block whose body is cut
    return {
        "empty": (b"", "holds no PEM key"),
        "text": (b"not a key at all\n", "holds no PEM key"),
        "small": (_pem(small), "key 1 has 1024 bits; at least 2048"),
        "second small": (pem(0) + _pem(small), "key 2 has 1024 bits"),
        "ec": (_pem(ec_key), "key 1 is not an RSA key"),
        "public": (public, "key 1 is a PUBLIC KEY, not an RSA private key"),
        "encrypted": (_pem(small, password=b"pw"), "encrypted keys are not read"),
        "twice": (pem(0) + pem(0), "twice"),
        "broken": (broken, "key 1 cannot be read"),
    }[name]


@pytest.mark.parametrize(
    "name",
    ["empty", "text", "small", "second small", "ec", "public", "encrypted", "twice", "broken"],
)
def test_bad_key_files_are_refused(tmp_path: Path, name: str) -> None:
    data, says = _bad_key_file(name)
    path = tmp_path / "bad.pem"
    path.write_bytes(data)
    error = _refused({**oidc_env(tmp_path), "OIDC_SIGNING_KEY_FILE": str(path)})
    assert error.variable == "OIDC_SIGNING_KEY_FILE"
    assert says in str(error), (name, str(error))


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    error = _refused({**oidc_env(tmp_path), "OIDC_SIGNING_KEY_FILE": str(tmp_path / "no.pem")})
    assert error.variable == "OIDC_SIGNING_KEY_FILE" and "cannot be read" in str(error)


def test_pkcs1_keys_and_several_keys_are_read(tmp_path: Path) -> None:
    native = serialization.load_pem_private_key(pem(1), None)
    assert isinstance(native, rsa.RSAPrivateKey)
    pkcs1 = _pem(native, fmt=serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    path = key_file(tmp_path, pem(0), b"# the previous key, until its tokens expire\n", pkcs1,
                    name="rotated.pem")
    oidc = _load({**oidc_env(tmp_path), "OIDC_SIGNING_KEY_FILE": str(path)}).oidc
    assert oidc is not None and len(oidc.signing_keys.kids) == 2


def test_secrets_and_keys_never_in_repr(tmp_path: Path) -> None:
    settings = _load(oidc_env(tmp_path))
    text = repr(settings)
    assert SHOP_SECRET not in text
    assert "PRIVATE" not in text and "SigningKeys(kids=" in text
    private_d = serialization.load_pem_private_key(pem(0), None)
    assert isinstance(private_d, rsa.RSAPrivateKey)
    assert str(private_d.private_numbers().d) not in text
