"""shared.settings: defaults, parsing, and one clear error per bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.sessions import api_client_name, client_name
from shared.settings import (
    MAX_CODE_SLOTS,
    SESSION_NAME_BYTES,
    Secret,
    SettingsError,
    code_windows,
    load_settings,
)
from shared.tokens import field_tail
from tests.fixtures.oidc import SHOP, oidc_env

SECRET = "x" * 32
KEY_ONE, KEY_TWO = "key-one-0123456789abcdefgh", "key-two-0123456789abcdefgh"



def test_defaults_follow_the_contract() -> None:
    s = load_settings(env={"AUTH_SECRET": SECRET}, env_file="/nonexistent")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.telegram_api_base_url == "https://api.telegram.org/bot"
    assert (s.code_length, s.code_ttl_seconds, s.token_ttl_seconds) == (8, 300, 2592000)
    assert (s.api_host, s.api_port, s.api_keys) == ("127.0.0.1", 8000, ())
    assert (s.issue_limit, s.issue_window_seconds) == (5, 600)
    assert (s.redeem_fail_limit, s.redeem_fail_window_seconds) == (10, 600)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUTH_SECRET": ""}, "AUTH_SECRET"),
        ({"AUTH_SECRET": "short"}, "AUTH_SECRET"),
        ({"REDIS_URL": "nope://x"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:99999999"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://[::1"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://h:6379/abc"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://h:6379/0?socket_timeout=x"}, "REDIS_URL"),
        ({"REDIS_URL": "unix:///tmp/r.sock?db=z"}, "REDIS_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"CODE_TTL_SECONDS": "abc"}, "CODE_TTL_SECONDS"),
        ({"CODE_LENGTH": "5"}, "CODE_LENGTH"),
        ({"CODE_LENGTH": "13"}, "CODE_LENGTH"),
        ({"API_PORT": "http"}, "API_PORT"),
        ({"API_KEYS": "shop:"}, "API_KEYS"),
        ({"DEMO_PAGE": "maybe"}, "DEMO_PAGE"),
        ({"TELEGRAM_API_BASE_URL": "ftp://x"}, "TELEGRAM_API_BASE_URL"),
        # an issue would read 100 x (86400 / 60 + 1) slots of the user's codes
        ({"CODE_TTL_SECONDS": "86400", "CODE_ISSUE_WINDOW_SECONDS": "60",
          "CODE_ISSUE_LIMIT": "100"}, "CODE_ISSUE_WINDOW_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env={"AUTH_SECRET": SECRET, **env}, env_file="/nonexistent")
    assert error.value.variable == variable
    assert str(error.value).startswith(variable)


def test_bot_token_required_only_by_the_bot() -> None:
    with pytest.raises(SettingsError, match="TELEGRAM_BOT_TOKEN"):
        load_settings(env={"AUTH_SECRET": SECRET}, env_file="/nonexistent", require_bot_token=True)


def test_port_wins_over_api_port_and_listens_on_every_interface() -> None:
    s = load_settings(
        env={"AUTH_SECRET": SECRET, "PORT": "5000", "API_PORT": "6000"}, env_file="/nonexistent"
    )
    assert (s.api_host, s.api_port) == ("0.0.0.0", 5000)  # a Procfile platform routes to it
    s = load_settings(
        env={"AUTH_SECRET": SECRET, "PORT": "5000", "API_HOST": "127.0.0.1"},
        env_file="/nonexistent",
    )
    assert s.api_host == "127.0.0.1"


def test_good_redis_urls_pass() -> None:
    for url in ("redis://h:6379/0", "rediss://u:p@h:6380/2", "unix:///tmp/r.sock", "redis://h"):
        assert load_settings(
            env={"AUTH_SECRET": SECRET, "REDIS_URL": url}, env_file="/nonexistent"
        ).redis_url == url


def test_named_and_bare_api_keys() -> None:
    s = load_settings(
        env={"AUTH_SECRET": SECRET, "API_KEYS": f"shop.example:{KEY_ONE}, {KEY_TWO}"},
        env_file="/nonexistent",
    )
    assert [c.name for c in s.api_keys] == ["shop.example", "client 2"]
    client = s.client_for_key(KEY_TWO)
    assert client is not None and client.name == "client 2"
    assert s.client_for_key("k3") is None


def test_secrets_hidden_in_repr() -> None:
    s = load_settings(
        env={"AUTH_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": "123:abc", "API_KEYS": f"a:{KEY_ONE}"},
        env_file="/nonexistent",
    )
    text = repr(s)
    assert SECRET not in text and "123:abc" not in text and KEY_ONE not in text
    assert repr(Secret("v")) == "Secret('**********')"


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"AUTH_SECRET={SECRET}\nCODE_LENGTH=6\nCODE_TTL_SECONDS=60\n")
    s = load_settings(env={"CODE_TTL_SECONDS": "90"}, env_file=env_file)
    assert (s.code_length, s.code_ttl_seconds) == (6, 90)


# -- Redis topology: REDIS_TIMEOUT, Sentinel, Cluster ----------------------------------------


def test_redis_defaults_are_one_server_and_five_seconds() -> None:
    s = load_settings(env={"AUTH_SECRET": SECRET}, env_file="/nonexistent")
    assert s.redis_timeout == 5.0
    assert (s.redis_sentinels, s.redis_sentinel_master, s.redis_cluster) == ((), "", False)


def test_sentinel_and_cluster_settings() -> None:
    s = load_settings(
        env={
            "AUTH_SECRET": SECRET,
            "REDIS_URL": "rediss://:pw@ignored/2",
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:5000, sentinel-c",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_TIMEOUT": "2.5",
        },
        env_file="/nonexistent",
    )
    assert s.redis_sentinels == (
        ("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 5000), ("sentinel-c", 26379)
    )
    assert (s.redis_sentinel_master, s.redis_timeout) == ("mymaster", 2.5)
    s = load_settings(
        env={"AUTH_SECRET": SECRET, "REDIS_URL": "redis://node-1:7000", "REDIS_CLUSTER": "1"},
        env_file="/nonexistent",
    )
    assert s.redis_cluster and not s.redis_sentinels


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"REDIS_TIMEOUT": "soon"}, "REDIS_TIMEOUT", "number of seconds"),
        ({"REDIS_TIMEOUT": "0"}, "REDIS_TIMEOUT", "between"),
        ({"REDIS_TIMEOUT": "nan"}, "REDIS_TIMEOUT", "between"),
        ({"REDIS_TIMEOUT": "600"}, "REDIS_TIMEOUT", "between"),
        ({"REDIS_SENTINELS": "a:1,b:x", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS", "'b:x'"),
        ({"REDIS_SENTINELS": "a:1/x", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS", "a:1/x"),
        ({"REDIS_SENTINELS": "a:1"}, "REDIS_SENTINEL_MASTER", "required"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS", "required"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m x"}, "REDIS_SENTINEL_MASTER", ""),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER", "1 or 0"),
        (
            {"REDIS_CLUSTER": "1", "REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_CLUSTER", "REDIS_SENTINELS",
        ),
        ({"REDIS_CLUSTER": "1", "REDIS_URL": "unix:///tmp/r.sock"}, "REDIS_CLUSTER", "unix://"),
        ({"REDIS_CLUSTER": "1", "REDIS_URL": "redis://h:7000/3"}, "REDIS_CLUSTER", "database 0"),
        (
            {"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///r.s"},
            "REDIS_SENTINELS", "unix://",
        ),
    ],
)
def test_bad_redis_topology_names_the_variable(
    env: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env={"AUTH_SECRET": SECRET, **env}, env_file="/nonexistent")
    assert error.value.variable == variable
    assert str(error.value).startswith(variable) and says in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["AUTH_SECRET", "API_KEYS", "TELEGRAM_BOT_TOKEN"])
def test_a_value_that_is_not_utf8_text_is_a_clear_error(name: str) -> None:
    env = {"AUTH_SECRET": SECRET, name: "x" * 40 + "\udcff"}  # the byte 0xff, as Python sees it
    with pytest.raises(SettingsError, match=f"{name} must be valid UTF-8 text"):
        load_settings(env=env, env_file="/nonexistent")


def test_api_keys_shorter_than_24_characters_are_refused() -> None:
    with pytest.raises(SettingsError, match="API_KEYS keys must be at least 24"):
        load_settings(env={"AUTH_SECRET": SECRET, "API_KEYS": "shop:" + "k" * 23},
                      env_file="/nonexistent")
    settings = load_settings(env={"AUTH_SECRET": SECRET, "API_KEYS": "shop:" + "k" * 24},
                             env_file="/nonexistent")
    assert [c.name for c in settings.api_keys] == ["shop"]


def test_client_names_a_session_could_not_tell_apart_are_refused(tmp_path: Path) -> None:
    """An API token's session keeps the first SESSION_NAME_BYTES bytes of its client's
    name (at the least: from an IPv6 address) and finds the client again by them; two
    API_KEYS names that begin alike would send one client's events to another, or to
    none."""
    long = "a" * SESSION_NAME_BYTES

    def names(*given: str) -> list[str]:
        keys = ",".join(f"{name}:{KEY_ONE[:-2]}{n:02d}" for n, name in enumerate(given))
        s = load_settings(env={"AUTH_SECRET": SECRET, "API_KEYS": keys},
                          env_file="/nonexistent")
        return [client.name for client in s.api_keys]

    for clash in ([long + "x", long + "y"], [long, long + "y"], [long + "y", long + "yz"]):
        with pytest.raises(SettingsError, match=r"API_KEYS names .* begin alike") as error:
            names(*clash)
        assert "\n" not in str(error.value)
    # distinct within the kept bytes; short names, kept whole, even when one begins
    # another; the same client under two keys (a rotation)
    allowed = [long[:-1] + "x" + "tail", long[:-1] + "y" + "tail", "Acme Shop",
               "Acme Shop (demo)", "shop", "shop" + long, "shop"]
    assert names(*allowed) == allowed
    # an OpenID Connect client's name is looked up among those only
    env = oidc_env(tmp_path, [{**SHOP, "name": long + "z"}])
    settings = load_settings(env={"AUTH_SECRET": SECRET, "API_KEYS": f"{long}x:{KEY_ONE}",
                                  **env}, env_file="/nonexistent")
    assert settings.oidc is not None and settings.oidc.clients[0].name == long + "z"


def test_a_session_keeps_at_least_the_bytes_of_a_name_the_settings_assume() -> None:
    """The least room `field_tail` leaves a client's name (an IPv6 address's network) is
    what the settings check names against."""
    tail = field_tail("2001:db8::1", client="n" * 100)
    assert tail.split("|")[-1] == "n" * SESSION_NAME_BYTES
    for address in ("192.0.2.1", "unknown", "::ffff:192.0.2.1"):
        assert len(field_tail(address, client="n" * 100).split("|")[-1]) >= SESSION_NAME_BYTES


def test_the_slots_an_issue_reads_are_bounded() -> None:
    """An issue reads each slot that may hold a live code of the user: the limit times
    the windows a code's key spans, and the current one."""
    def slots(**env: str) -> int:
        s = load_settings(env={"AUTH_SECRET": SECRET, **env}, env_file="/nonexistent")
        return s.issue_limit * code_windows(s.code_ttl_seconds, s.issue_window_seconds)

    assert slots() == 5 * 2  # 300 s codes, 600 s windows: this window and the last
    assert slots(CODE_ISSUE_WINDOW_SECONDS="60") == 5 * 6
    assert slots(CODE_ISSUE_LIMIT="1000") == MAX_CODE_SLOTS  # the largest limit still fits


def test_a_session_finds_its_client_among_its_own_kind(tmp_path: Path) -> None:
    """An OpenID Connect session keeps fewer bytes of its client's name (its field names
    the token family too): the demo's "Acme Shop (demo)" is kept as "Acme Shop" from
    IPv6, which is also an API client's whole name. Each kind of session is looked up
    among its own kind's names, so each is named right."""
    env = oidc_env(tmp_path, [{**SHOP, "name": "Acme Shop (demo)"}])
    settings = load_settings(env={"AUTH_SECRET": SECRET, "API_KEYS": f"Acme Shop:{KEY_ONE}",
                                  **env}, env_file="/nonexistent")
    family = "f" * 22
    oidc_kept = field_tail("2001:db8::1", family, "Acme Shop (demo)").split("|")[-1]
    assert oidc_kept == "Acme Shop"  # cut
    assert client_name(settings, oidc_kept, oidc=True) == "Acme Shop (demo)"
    api_kept = field_tail("2001:db8::1", client="Acme Shop").split("|")[-1]
    assert client_name(settings, api_kept) == "Acme Shop"
    assert api_client_name(settings, api_kept) == "Acme Shop"
