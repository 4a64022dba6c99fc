"""`make run` and the demo's event webhook: with the demo on, an API client and no
webhooks, one for the demo's client to its own receiver, its secret made once in the
private state (0600, never printed, in no variable), through EVENT_WEBHOOKS_FILE; and
EVENT_WEBHOOKS_FILE as settings read it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from api_worker.demo_events import RECEIVER_PATH, receiver_secrets
from sandbox.launch import _announce, _urls, build_environment
from shared.settings import SettingsError, load_settings
from tests.sandbox.test_launch import launch_env as launch_env

KEYS = "Acme Shop:acme-demo-key-0123456789,cli:cli-key-0123456789abcdefgh"
SECRET = "whsec_" + "B" * 43


@pytest.fixture(autouse=True)
def _demo_page_as_make_run_sets_it(launch_env: pytest.MonkeyPatch) -> None:
    """DEMO_PAGE left to make run's default (on), with API clients."""
    launch_env.delenv("DEMO_PAGE", raising=False)
    launch_env.setenv("API_KEYS", KEYS)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_demo_gets_a_webhook_with_a_secret_made_once(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = build_environment(tmp_path)
    private = tmp_path / "var" / "demo"
    secret_file = private / "webhook-secret"
    hooks_file = private / "webhooks.json"
    assert env["EVENT_WEBHOOKS_FILE"] == str(hooks_file) and "EVENT_WEBHOOKS" not in env
    assert _mode(private) == 0o700
    assert _mode(secret_file) == 0o600 and _mode(hooks_file) == 0o600
    secret = secret_file.read_text().strip()
    assert secret.startswith("whsec_") and len(secret) > 40
    (hook,) = json.loads(hooks_file.read_text())
    assert hook == {"client": "Acme Shop", "url": "http://127.0.0.1:8000" + RECEIVER_PATH,
                    "secret": secret}
    # the API delivers to it, and the demo finds its secret in the API's own settings
    settings = load_settings(env, env_file=tmp_path / ".env", require_bot_token=True)
    (endpoint,) = settings.event_webhooks
    assert endpoint.client == "Acme Shop" and endpoint.url.endswith(RECEIVER_PATH)
    assert [s.reveal() for s in receiver_secrets(settings)] == [secret]
    # in files only: no variable carries it, no line shows it
    assert not any(secret in value for value in env.values())
    _announce(env, _urls(env))
    out = capsys.readouterr().out
    assert f"demo webhook receiver: http://127.0.0.1:8000{RECEIVER_PATH}" in out
    assert secret not in out

    # the next run keeps the secret; the URL follows where the API is now
    launch_env.setenv("API_PORT", "8200")
    again = build_environment(tmp_path)
    assert secret_file.read_text().strip() == secret
    (hook,) = json.loads(Path(again["EVENT_WEBHOOKS_FILE"]).read_text())
    assert hook["url"] == "http://127.0.0.1:8200" + RECEIVER_PATH and hook["secret"] == secret


@pytest.mark.parametrize("variable", ["EVENT_WEBHOOKS", "EVENT_WEBHOOKS_FILE"])
def test_the_operators_webhooks_are_left_alone(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, variable: str
) -> None:
    hooks = json.dumps([{"client": "cli", "url": "https://cli.example/hook", "secret": SECRET}])
    value = hooks
    if variable == "EVENT_WEBHOOKS_FILE":
        (tmp_path / "mine.json").write_text(hooks)
        value = str(tmp_path / "mine.json")
    launch_env.setenv(variable, value)
    env = build_environment(tmp_path)
    assert env[variable] == value
    assert not (tmp_path / "var" / "demo").exists()
    settings = load_settings(env, env_file=tmp_path / ".env", require_bot_token=True)
    assert [h.client for h in settings.event_webhooks] == ["cli"]
    assert receiver_secrets(settings) == ()  # the demo then shows no events


@pytest.mark.parametrize(("name", "value"), [("DEMO_PAGE", "0"), ("API_KEYS", "")])
def test_no_webhook_without_the_demo_or_a_client(
    tmp_path: Path, launch_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """With no API_KEYS the API stays open (the quick start's curl needs no key) and has
    no client to deliver to: make run makes no key of its own."""
    launch_env.setenv(name, value)
    env = build_environment(tmp_path)
    assert "EVENT_WEBHOOKS_FILE" not in env and not (tmp_path / "var" / "demo").exists()
    assert env.get("API_KEYS", "") == ("" if name == "API_KEYS" else KEYS)


def test_no_webhook_when_the_api_is_not_on_loopback(
    tmp_path: Path, launch_env: pytest.MonkeyPatch
) -> None:
    """Elsewhere a webhook URL must be https://, which only the operator knows."""
    launch_env.setenv("API_HOST", "192.0.2.10")
    env = build_environment(tmp_path)
    assert "EVENT_WEBHOOKS_FILE" not in env


# -- EVENT_WEBHOOKS_FILE as settings read it ------------------------------------------------


def _base(tmp_path: Path, **env: str) -> dict[str, str]:
    return {"AUTH_SECRET": "s" * 40, "REDIS_URL": "redis://127.0.0.1/0", "API_KEYS": KEYS,
            **env}


def test_event_webhooks_file_reads_the_same_json(tmp_path: Path) -> None:
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps([{"client": "cli", "url": "https://a.example/h",
                                 "secret": SECRET, "events": ["code.redeemed"]}]))
    settings = load_settings(_base(tmp_path, EVENT_WEBHOOKS_FILE=str(path)),
                             env_file="/nonexistent")
    (hook,) = settings.event_webhooks
    assert hook.client == "cli" and hook.url == "https://a.example/h"
    assert hook.secrets[0].reveal() == SECRET and hook.events == {"code.redeemed"}
    path.write_text("")  # an empty file: no webhooks
    settings = load_settings(_base(tmp_path, EVENT_WEBHOOKS_FILE=str(path)),
                             env_file="/nonexistent")
    assert settings.event_webhooks == ()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot be read"),
        (b"\xff\xfe", "must be UTF-8 text"),
        (b"[{", "is not valid JSON"),
        (json.dumps([{"client": "nobody", "url": "https://a.example/h",
                      "secret": SECRET}]).encode(), "client must be the name"),
        (json.dumps([{"client": "cli", "url": "https://a.example/h",
                      "secret": "whsec_short"}]).encode(), "secret must be"),
    ],
)
def test_a_bad_event_webhooks_file_names_itself_and_never_its_secret(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "hooks.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        load_settings(_base(tmp_path, EVENT_WEBHOOKS_FILE=str(path)), env_file="/nonexistent")
    assert caught.value.variable == "EVENT_WEBHOOKS_FILE"
    assert str(caught.value).startswith("EVENT_WEBHOOKS_FILE ") and says in str(caught.value)
    assert "whsec_short" not in str(caught.value)


def test_event_webhooks_file_and_event_webhooks_are_not_both_set(tmp_path: Path) -> None:
    path = tmp_path / "hooks.json"
    path.write_text("[]")
    with pytest.raises(SettingsError, match="cannot be combined with EVENT_WEBHOOKS"):
        load_settings(_base(tmp_path, EVENT_WEBHOOKS_FILE=str(path), EVENT_WEBHOOKS="[]"),
                      env_file="/nonexistent")
