"""api_worker.oidc: the discovery document and the JWKS (as the routes will be mounted
once the flow is built), and what the API does meanwhile with OIDC configured."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from authlib.oauth2 import rfc8414, rfc9207
from authlib.oidc.discovery import OpenIDProviderMetadata
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from api_worker import oidc
from api_worker.app import Api, create_app
from api_worker.errors import EXCEPTION_HANDLERS
from shared.settings import OidcSettings
from tests.fixtures.api import ApiStarter, TestClient, api_settings
from tests.fixtures.common import run_module
from tests.fixtures.oidc import ISSUER, key_file, oidc_env, pem

SECRET = "s" * 40


def _oidc(redis_url: str, tmp_path: Path, **env: str) -> OidcSettings:
    settings = api_settings(redis_url, **{**oidc_env(tmp_path), **env})
    assert settings.oidc is not None
    return settings.oidc


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> OidcSettings:
    """A provider with two keys in its file (a rotation: the first signs)."""
    keys = key_file(tmp_path, pem(1), pem(0), name="rotating.pem")
    return _oidc(redis_url, tmp_path, OIDC_SIGNING_KEY_FILE=str(keys))


@pytest.fixture
def provider(settings: OidcSettings) -> Iterator[TestClient]:
    """The provider's routes behind the API's own middleware."""
    app = Api(routes=oidc.provider_routes(settings), exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app, base_url=ISSUER) as client:
        yield client


def test_discovery_document(provider: TestClient) -> None:
    response = provider.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/oauth/authorize",
        "token_endpoint": f"{ISSUER}/oauth/token",
        "userinfo_endpoint": f"{ISSUER}/oauth/userinfo",
        "revocation_endpoint": f"{ISSUER}/oauth/revoke",
        "jwks_uri": f"{ISSUER}/oauth/jwks",
        "scopes_supported": ["openid", "profile"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"
        ],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
            "name", "preferred_username", "locale", "telegram_id",
        ],
        "ui_locales_supported": ["en", "ru"],
        "authorization_response_iss_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
    }


def test_discovery_passes_authlibs_validation(provider: TestClient) -> None:
    document = provider.get("/.well-known/openid-configuration").json()
    OpenIDProviderMetadata(document).validate(
        metadata_classes=[rfc9207.AuthorizationServerMetadata]
    )
    rfc8414.AuthorizationServerMetadata(document).validate()


def test_endpoints_follow_an_issuer_with_a_path(redis_url: str, tmp_path: Path) -> None:
    settings = _oidc(redis_url, tmp_path, OIDC_ISSUER="https://example.com/login/")
    document = oidc.discovery(settings)
    assert document["issuer"] == "https://example.com/login"
    assert document["jwks_uri"] == "https://example.com/login/oauth/jwks"
    assert document["token_endpoint"] == "https://example.com/login/oauth/token"


def test_jwks_at_the_jwks_uri(provider: TestClient, settings: OidcSettings) -> None:
    jwks_uri = provider.get("/.well-known/openid-configuration").json()["jwks_uri"]
    response = provider.get(jwks_uri)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    jwks = response.json()
    assert jwks == settings.signing_keys.jwks()
    assert [jwk["kid"] for jwk in jwks["keys"]] == list(settings.signing_keys.kids)
    for jwk in jwks["keys"]:
        assert sorted(jwk) == ["alg", "e", "kid", "kty", "n", "use"]


def test_a_token_verifies_against_the_served_jwks_alone(
    provider: TestClient, settings: OidcSettings
) -> None:
    """What a relying party does: the key named by `kid`, from the JWKS, by `cryptography`
    and nothing of ours."""
    token = settings.signing_keys.sign({"iss": ISSUER, "sub": "1001"})
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_unb64(header_b64))
    jwks = provider.get("/oauth/jwks").json()
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["kid"] == jwks["keys"][0]["kid"]  # the first key signs
    public = rsa.RSAPublicNumbers(
        int.from_bytes(_unb64(jwk["e"]), "big"), int.from_bytes(_unb64(jwk["n"]), "big")
    ).public_key()
    public.verify(  # raises InvalidSignature if not
        _unb64(signature_b64), f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(),
        hashes.SHA256(),
    )


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/oauth/jwks"])
def test_documents_are_cache_friendly(provider: TestClient, path: str) -> None:
    response = provider.get(path)
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["access-control-allow-origin"] == "*"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = provider.get(path, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=3600"
    changed = provider.get(path, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.content == response.content


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/oauth/jwks"])
def test_head_works_where_get_does_and_nothing_else_does(provider: TestClient,
                                                         path: str) -> None:
    get = provider.get(path)
    head = provider.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == get.headers["content-length"]
    post = provider.post(path)
    assert post.status_code == 405 and post.json()["error"] == "method_not_allowed"


def test_every_endpoint_the_document_names_answers(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the whole app: none of the document's URLs is a 404 (a client configured
    from it would fail only when a user tries to log in)."""
    settings = api_settings(redis_url, **oidc_env(tmp_path))
    assert settings.oidc is not None
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        document = client.get("/.well-known/openid-configuration").json()
        for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                     "revocation_endpoint", "jwks_uri"):
            path = document[name].removeprefix(ISSUER)
            assert path.startswith("/oauth/")
            method = "POST" if name in ("token_endpoint", "revocation_endpoint") else "GET"
            assert client.request(method, path).status_code not in (404, 405), name
    assert "OpenID Connect provider on" in caplog.text
    assert settings.oidc.signing_keys.signing_kid in caplog.text  # which key, never the key


def test_off_without_clients(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = api_settings(redis_url)
    assert settings.oidc is None
    with caplog.at_level(logging.WARNING):
        assert oidc.routes(settings) == []
    assert "OpenID" not in caplog.text


def _bad(tmp_path: Path, **changes: str) -> dict[str, str]:
    return {"AUTH_SECRET": SECRET, **oidc_env(tmp_path), **changes}


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"OIDC_ISSUER": "http://id.example.com"}, "OIDC_ISSUER must be https://"),
        ({"OIDC_ISSUER": ""}, "OIDC_ISSUER is required with OIDC_CLIENTS"),
        ({"OIDC_CLIENTS": "[{"}, "OIDC_CLIENTS is not valid JSON"),
        ({"OIDC_CLIENTS": '[{"client_id": "shop", "name": "Shop", "redirect_uris": '
                          '["http://shop.example/cb"]}]'},
         "OIDC_CLIENTS client 'shop': redirect URI 'http://shop.example/cb' must be https://"),
        ({"OIDC_CLIENTS_FILE": "/nonexistent/clients.json"},
         "OIDC_CLIENTS_FILE cannot be combined with OIDC_CLIENTS"),
        ({"OIDC_SIGNING_KEY_FILE": "/nonexistent/key.pem"},
         "OIDC_SIGNING_KEY_FILE cannot be read"),
        ({"OIDC_SIGNING_KEY_FILE": ""}, "OIDC_SIGNING_KEY_FILE is required with OIDC_CLIENTS"),
    ],
)
def test_bad_oidc_configuration_stops_the_api_in_one_line(
    tmp_path: Path, changes: dict[str, str], says: str
) -> None:
    result = run_module("api_worker", _bad(tmp_path, **changes), tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"api_worker: configuration error: {says}")
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_client_secret_stops_the_bot_too_without_showing_it(tmp_path: Path) -> None:
    secret = "too-short-" + "q" * 10
    clients = json.dumps([{"client_id": "shop", "name": "Shop", "client_secret": secret,
                           "redirect_uris": ["https://shop.example/cb"]}])
    env = _bad(tmp_path, OIDC_CLIENTS=clients, TELEGRAM_BOT_TOKEN="123:abc")
    for module in ("api_worker", "bot_worker"):
        result = run_module(module, env, tmp_path)
        assert result.returncode == 2, result
        assert f"{module}: configuration error: OIDC_CLIENTS client 'shop': client_secret" \
            in result.stderr
        assert secret not in result.stderr + result.stdout


def test_the_api_process_serves_the_provider(start_api: ApiStarter, tmp_path: Path) -> None:
    """A real process: valid configuration starts it, and the provider answers."""
    api = start_api(**oidc_env(tmp_path))
    assert "PRIVATE KEY" not in api.output()
    document = httpx.get(f"{api.url}/.well-known/openid-configuration").json()
    assert document["issuer"] == ISSUER
    assert httpx.get(f"{api.url}/oauth/jwks").status_code == 200


def test_create_app_serves_the_documents(redis_url: str, tmp_path: Path) -> None:
    """The same routes through the whole app."""
    settings = api_settings(redis_url, **oidc_env(tmp_path))
    assert settings.oidc is not None
    with TestClient(create_app(settings), base_url=ISSUER) as client:
        document = client.get("/.well-known/openid-configuration").json()
        assert document["issuer"] == ISSUER
        assert client.get("/oauth/jwks").json() == settings.oidc.signing_keys.jwks()
        assert client.head("/oauth/jwks").status_code == 200
