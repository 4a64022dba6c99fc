"""`make run` with OpenID Connect clients: the signing key it makes once in its private
state (0600, never printed), and the local issuer."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sandbox.launch import build_environment
from shared.oidc_keys import SigningKeys
from shared.settings import SettingsError
from tests.fixtures.oidc import CLI, SHOP, key_file
from tests.sandbox.test_launch import launch_env as launch_env

CLIENTS = json.dumps([SHOP, CLI])


def test_without_clients_no_key_is_made(tmp_path: Path, launch_env: pytest.MonkeyPatch) -> None:
    env = build_environment(tmp_path)
    assert "OIDC_SIGNING_KEY_FILE" not in env and "OIDC_ISSUER" not in env
    assert not (tmp_path / "var" / "oidc").exists()


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
