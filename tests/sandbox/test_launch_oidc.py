"""`make run` with OpenID Connect clients: the signing key it makes once in its private
state (0600, never printed), and the local issuer; with none and the demo website on,
the demo's own client, its secret made once in the private state too."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from api_worker.demo import CALLBACK_PATH, demo_client
from sandbox.launch import _announce, _urls, build_environment
from shared.oidc_keys import SigningKeys
from shared.settings import SettingsError, load_settings
from tests.fixtures.oidc import CLI, SHOP, key_file
from tests.sandbox.test_launch import launch_env as launch_env

CLIENTS = json.dumps([SHOP, CLI])


@pytest.fixture(autouse=True)
def _demo_page_as_make_run_sets_it(launch_env: pytest.MonkeyPatch) -> None:
    """DEMO_PAGE left to make run's default: on."""
    launch_env.delenv("DEMO_PAGE", raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_without_clients_or_demo_no_key_is_made(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("DEMO_PAGE", "0")
    env = build_environment(tmp_path)
    assert "OIDC_SIGNING_KEY_FILE" not in env and "OIDC_ISSUER" not in env
    assert "OIDC_CLIENTS_FILE" not in env
    assert not (tmp_path / "var" / "oidc").exists()


def test_the_demo_gets_a_client_with_a_secret_made_once(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = build_environment(tmp_path)
    private = tmp_path / "var" / "oidc"
    secret_file = private / "demo-client-secret"
    clients_file = private / "demo-clients.json"
    assert env["OIDC_CLIENTS_FILE"] == str(clients_file) and "OIDC_CLIENTS" not in env
    assert env["OIDC_ISSUER"] == "http://127.0.0.1:8000"
    assert Path(env["OIDC_SIGNING_KEY_FILE"]).is_file()  # the provider starts as with clients
    assert _mode(private) == 0o700
    assert _mode(secret_file) == 0o600 and _mode(clients_file) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 40
    (client,) = json.loads(clients_file.read_text())
    assert client == {
        "client_id": "acme-demo",
        "name": "Acme Shop (demo)",
        "redirect_uris": ["http://127.0.0.1:8000" + CALLBACK_PATH],
        "client_secret": secret,
    }
    # the API finds it as the demo's: its redirect URI is the callback on the issuer
    settings = load_settings(env, env_file=tmp_path / ".env", require_bot_token=True)
    found = demo_client(settings)
    assert found is not None and found.client_id == "acme-demo" and found.confidential
    # in files only: no variable carries it to supervisord's programs, no line shows it
    assert not any(secret in value for value in env.values())
    _announce(env, _urls(env))
    out = capsys.readouterr().out
    assert "demo website: http://127.0.0.1:8000/demo (Log in with OpenID Connect: " \
        "client acme-demo)" in out
    assert secret not in out

    # the next run keeps the secret; the redirect URI follows where the API is now
    launch_env.setenv("API_PORT", "8200")
    again = build_environment(tmp_path)
    assert secret_file.read_text().strip() == secret
    (client,) = json.loads(Path(again["OIDC_CLIENTS_FILE"]).read_text())
    assert client["client_secret"] == secret
    assert client["redirect_uris"] == ["http://127.0.0.1:8200" + CALLBACK_PATH]


def test_the_demo_client_follows_the_operators_issuer(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("OIDC_ISSUER", "https://shop.example.com/")
    env = build_environment(tmp_path)
    (client,) = json.loads(Path(env["OIDC_CLIENTS_FILE"]).read_text())
    assert client["redirect_uris"] == ["https://shop.example.com" + CALLBACK_PATH]
    settings = load_settings(env, env_file=tmp_path / ".env", require_bot_token=True)
    assert demo_client(settings) is not None


def test_the_operators_clients_get_no_demo_client(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    """Clients configured without one for the demo: the demo offers no OpenID Connect
    login (README "The demo website"); nothing is added to the operator's clients."""
    launch_env.setenv("OIDC_CLIENTS", CLIENTS)
    env = build_environment(tmp_path)
    assert "OIDC_CLIENTS_FILE" not in env
    assert not (tmp_path / "var" / "oidc" / "demo-client-secret").exists()
    settings = load_settings(env, env_file=tmp_path / ".env", require_bot_token=True)
    assert settings.oidc is not None and len(settings.oidc.clients) == 2
    assert demo_client(settings) is None


def test_clients_get_a_private_key_made_once_and_the_local_issuer(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("OIDC_CLIENTS", CLIENTS)
    env = build_environment(tmp_path)
    key = tmp_path / "var" / "oidc" / "signing-key.pem"
    assert env["OIDC_SIGNING_KEY_FILE"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert env["OIDC_ISSUER"] == "http://127.0.0.1:8000"
    # the key is in the file only: no variable carries it to supervisord's programs
    text = key.read_text()
    assert "PRIVATE KEY" in text
    assert not any("PRIVATE KEY" in value or text[40:80] in value for value in env.values())
    kid = SigningKeys.from_file(key).signing_kid
    # the next `make run` signs with the same key: tokens issued before still verify
    again = build_environment(tmp_path)
    assert again["OIDC_SIGNING_KEY_FILE"] == str(key)
    assert key.read_text() == text and SigningKeys.from_file(key).signing_kid == kid


def test_clients_in_a_file_or_in_dotenv_count_too(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text(CLIENTS)
    (tmp_path / ".env").write_text(f"OIDC_CLIENTS_FILE={clients}\nAPI_PORT=9000\n")
    env = build_environment(tmp_path)
    assert Path(env["OIDC_SIGNING_KEY_FILE"]).is_file()
    assert env["OIDC_ISSUER"] == "http://127.0.0.1:9000"


def test_the_issuer_follows_where_the_api_listens(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("OIDC_CLIENTS", CLIENTS)
    launch_env.setenv("API_HOST", "::1")
    launch_env.setenv("API_PORT", "8100")
    assert build_environment(tmp_path)["OIDC_ISSUER"] == "http://[::1]:8100"
    launch_env.setenv("API_HOST", "0.0.0.0")
    assert build_environment(tmp_path)["OIDC_ISSUER"] == "http://127.0.0.1:8100"


def test_the_operators_key_and_issuer_are_kept(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    own = key_file(tmp_path)
    launch_env.setenv("OIDC_CLIENTS", CLIENTS)
    launch_env.setenv("OIDC_SIGNING_KEY_FILE", str(own))
    launch_env.setenv("OIDC_ISSUER", "https://id.example.com/")
    env = build_environment(tmp_path)
    assert env["OIDC_SIGNING_KEY_FILE"] == str(own)
    assert env["OIDC_ISSUER"] == "https://id.example.com/"  # the programs normalise it
    assert not (tmp_path / "var" / "oidc").exists()


def test_bad_clients_stop_make_run_naming_the_variable(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("OIDC_CLIENTS", json.dumps([{**SHOP, "redirect_uris": ["http://x.example"]}]))
    with pytest.raises(SettingsError) as error:
        build_environment(tmp_path)
    assert error.value.variable == "OIDC_CLIENTS" and "client 'shop'" in str(error.value)


def test_an_api_on_a_public_address_needs_an_https_issuer(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    launch_env.setenv("OIDC_CLIENTS", CLIENTS)
    launch_env.setenv("API_HOST", "192.0.2.10")
    with pytest.raises(SettingsError) as error:
        build_environment(tmp_path)
    assert error.value.variable == "OIDC_ISSUER" and "must be https://" in str(error.value)


def test_an_api_on_a_public_address_starts_without_the_demo_client(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    """There an issuer must be https://, which only the operator knows: make run starts
    as before, the demo without OpenID Connect; with their OIDC_ISSUER it has a client."""
    launch_env.setenv("API_HOST", "192.0.2.10")
    env = build_environment(tmp_path)
    assert "OIDC_CLIENTS_FILE" not in env and "OIDC_ISSUER" not in env
    assert not (tmp_path / "var" / "oidc").exists()
    launch_env.setenv("OIDC_ISSUER", "https://shop.example.com")
    env = build_environment(tmp_path)
    (client,) = json.loads(Path(env["OIDC_CLIENTS_FILE"]).read_text())
    assert client["redirect_uris"] == ["https://shop.example.com" + CALLBACK_PATH]
