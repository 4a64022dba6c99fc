"""Settings: one frozen object built once from the environment and `.env`.

A missing or invalid value raises `SettingsError` naming the variable; the
entry points turn it into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values
from redis.connection import parse_url

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"
# an API key must be long enough that guessing it is hopeless
MIN_API_KEY_LENGTH = 24
# variables used as text (hashed, compared, sent): each must be valid UTF-8
_TEXT_VARIABLES = (
    "AUTH_SECRET", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_BASE_URL", "TELEGRAM_BOT_USERNAME",
    "REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "API_KEYS", "API_HOST",
    "WEBHOOK_URL", "WEBHOOK_SECRET", "BOT_HOST",
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(Exception):
    """A configuration variable is missing or invalid."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class Secret:
    """A string whose repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ApiClient:
    """One entry of API_KEYS: the name shown to users, and the key."""

    name: str
    key: Secret


@dataclass(frozen=True)
class Settings:
    auth_secret: Secret
    redis_url: str = "redis://127.0.0.1:6379/0"
    telegram_bot_token: Secret = field(default_factory=lambda: Secret(""))
    telegram_api_base_url: str = DEFAULT_API_BASE_URL
    telegram_bot_username: str = ""
    code_length: int = 8
    code_ttl_seconds: int = 300
    token_ttl_seconds: int = 2592000
    login_request_ttl_seconds: int = 300
    # deep-link login requests one client address may create in the window
    login_request_limit: int = 60
    login_request_window_seconds: int = 60
    api_keys: tuple[ApiClient, ...] = ()
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # per-user code issues allowed in the window
    issue_limit: int = 5
    issue_window_seconds: int = 600
    # failed redeems allowed per client address in the window
    redeem_fail_limit: int = 10
    redeem_fail_window_seconds: int = 600
    # failed redeems per minute, all addresses together, that raise the alarm
    redeem_fail_alarm_per_minute: int = 100
    # an IPv6 client's limits count per network of this many bits
    ipv6_limit_prefix: int = 64
    # wrong API keys allowed per client address in the window
    api_key_fail_limit: int = 20
    api_key_fail_window_seconds: int = 600
    demo_page: bool = False
    log_level: str = "INFO"
    # how updates reach the bot: "polling" (one leased poller) or "webhook"
    bot_mode: str = "polling"
    webhook_url: str = ""
    # the X-Telegram-Bot-Api-Secret-Token; derived from AUTH_SECRET when not set
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    bot_host: str = "127.0.0.1"
    bot_port: int = 8001
    # messages a second, all bot processes together (Telegram's flood limit)
    bot_send_rate: int = 30
    # seconds any Redis operation may take before the caller gets `Unavailable`
    redis_timeout: float = 5.0
    # Sentinel: the sentinels' addresses and the master's name (REDIS_URL then gives only
    # the database, password and TLS options)
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    # Cluster: REDIS_URL names one node
    redis_cluster: bool = False

    def client_for_key(self, key: str) -> ApiClient | None:
        """The API client whose key this is, or None."""
        for client in self.api_keys:
            if hmac.compare_digest(client.key.reveal().encode(), key.encode()):
                return client
        return None


def _environ(env: Mapping[str, str] | None, env_file: str | Path | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file is not None else Path(".env")
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if env is None else env)
    return merged


def _int(values: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value}")
    return value


def _redis_url(values: Mapping[str, str]) -> str:
    raw = values.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise SettingsError("REDIS_URL", f"cannot be parsed: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise SettingsError("REDIS_URL", "must start with redis://, rediss:// or unix://")
    try:
        parsed = parse_url(raw)  # type: ignore[no-untyped-call]  # as the client reads it
    except ValueError as exc:
        raise SettingsError("REDIS_URL", f"is invalid: {exc}") from None
    if parts.scheme == "unix" and not parsed.get("path"):
        raise SettingsError("REDIS_URL", "unix:// needs a socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError("REDIS_URL", "needs a host, e.g. redis://127.0.0.1:6379/0")
    database = parts.path.lstrip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise SettingsError("REDIS_URL", f"database must be a number, got {database!r}")
    return raw


def _redis_timeout(values: Mapping[str, str]) -> float:
    raw = values.get("REDIS_TIMEOUT", "").strip()
    if not raw:
        return 5.0
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError("REDIS_TIMEOUT", f"must be a number of seconds, got {raw!r}") from None
    if not 0.1 <= value <= 60:  # also refuses nan and inf
        raise SettingsError("REDIS_TIMEOUT", f"must be between 0.1 and 60 seconds, got {raw}")
    return value


_SENTINEL_PORT = 26379


def _sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port, host:port, [v6]:port`; a missing port is Sentinel's own, 26379."""
    found: list[tuple[str, int]] = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            parts = urlsplit(f"//{item}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host = port = None
        if not host or parts.path or parts.username is not None:
            raise SettingsError(
                "REDIS_SENTINELS", f"entries must be host:port, separated by commas, got {item!r}"
            )
        found.append((host, port or _SENTINEL_PORT))
    return tuple(found)


def _redis_topology(
    values: Mapping[str, str], redis_url: str
) -> tuple[tuple[tuple[str, int], ...], str, bool]:
    """REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_CLUSTER, checked together."""
    sentinels = _sentinels(values.get("REDIS_SENTINELS", ""))
    master = values.get("REDIS_SENTINEL_MASTER", "").strip()
    cluster = _bool(values, "REDIS_CLUSTER")
    if sentinels and not master:
        raise SettingsError("REDIS_SENTINEL_MASTER", "is required with REDIS_SENTINELS")
    if master and not sentinels:
        raise SettingsError("REDIS_SENTINELS", "is required with REDIS_SENTINEL_MASTER")
    if master and any(c.isspace() for c in master):
        raise SettingsError("REDIS_SENTINEL_MASTER", f"must not contain spaces, got {master!r}")
    if cluster and sentinels:
        raise SettingsError("REDIS_CLUSTER", "cannot be combined with REDIS_SENTINELS")
    parts = urlsplit(redis_url)
    if (sentinels or cluster) and parts.scheme == "unix":
        variable = "REDIS_CLUSTER" if cluster else "REDIS_SENTINELS"
        raise SettingsError(variable, "needs a redis:// or rediss:// REDIS_URL, not unix://")
    if cluster and parts.path.lstrip("/") not in ("", "0"):
        raise SettingsError("REDIS_CLUSTER", "has only database 0; REDIS_URL names another")
    return sentinels, master, cluster


def _log_level(values: Mapping[str, str]) -> str:
    level = values.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in _LOG_LEVELS:
        raise SettingsError("LOG_LEVEL", f"must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    return level


def _api_host(values: Mapping[str, str]) -> str:
    host = values.get("API_HOST", "").strip()
    if host:
        return host
    # a Procfile platform sets PORT and routes to it from outside the container
    return "0.0.0.0" if values.get("PORT", "").strip() else "127.0.0.1"


def _api_keys(raw: str) -> tuple[ApiClient, ...]:
    clients: list[ApiClient] = []
    for n, item in enumerate(p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, sep, key = item.rpartition(":")
        if not sep:
            name, key = f"client {n + 1}", item
        name, key = name.strip(), key.strip()
        if not key or (sep and not name):
            raise SettingsError("API_KEYS", "entries must be 'name:key' or 'key'")
        if len(key) < MIN_API_KEY_LENGTH:
            raise SettingsError(
                "API_KEYS",
                f"keys must be at least {MIN_API_KEY_LENGTH} characters "
                f"(the key of {name!r} has {len(key)})",
            )
        clients.append(ApiClient(name=name, key=Secret(key)))
    return tuple(clients)


_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _webhook(values: Mapping[str, str], secret: str) -> tuple[str, str, Secret]:
    """BOT_MODE, WEBHOOK_URL and WEBHOOK_SECRET, checked together."""
    mode = values.get("BOT_MODE", "").strip().lower() or "polling"
    if mode not in ("polling", "webhook"):
        raise SettingsError("BOT_MODE", f"must be polling or webhook, got {mode!r}")
    url = values.get("WEBHOOK_URL", "").strip()
    if mode == "webhook":
        if not url:
            raise SettingsError("WEBHOOK_URL", "is required when BOT_MODE=webhook")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # never echo the URL: it may carry a secret path (even the bot token)
            raise SettingsError("WEBHOOK_URL", "must be an https:// (or http://) URL")
    hook_secret = values.get("WEBHOOK_SECRET", "").strip()
    if hook_secret and not _WEBHOOK_SECRET.fullmatch(hook_secret):
        raise SettingsError("WEBHOOK_SECRET", "must be 1-256 characters of A-Z a-z 0-9 _ -")
    if not hook_secret:
        # the same in every process without another variable to keep in step
        hook_secret = hmac.new(secret.encode(), b"webhook-secret", hashlib.sha256).hexdigest()
    return mode, url, Secret(hook_secret)


def _bool(values: Mapping[str, str], name: str) -> bool:
    raw = values.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(name, f"must be 1 or 0, got {raw!r}")


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    env_file: str | Path | None = None,
    require_bot_token: bool = False,
) -> Settings:
    """Build settings from `env` (default: the process environment) over `.env`."""
    values = _environ(env, env_file)

    for name in _TEXT_VARIABLES:
        try:
            values.get(name, "").encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach Python as surrogates
            raise SettingsError(name, "must be valid UTF-8 text") from None
    secret = values.get("AUTH_SECRET", "")
    if not secret:
        raise SettingsError("AUTH_SECRET", "is required (at least 32 characters)")
    if len(secret) < 32:
        raise SettingsError("AUTH_SECRET", f"must be at least 32 characters, got {len(secret)}")

    token = values.get("TELEGRAM_BOT_TOKEN", "").strip()
    if require_bot_token and not token:
        raise SettingsError("TELEGRAM_BOT_TOKEN", "is required: the token from @BotFather")

    base_url = values.get("TELEGRAM_API_BASE_URL", "").strip() or DEFAULT_API_BASE_URL
    if urlsplit(base_url).scheme not in ("http", "https"):
        raise SettingsError("TELEGRAM_API_BASE_URL", "must be an http:// or https:// URL")

    port_raw = values.get("PORT", "").strip()
    api_port = (
        _int(values, "PORT", 8000, 1, 65535)
        if port_raw
        else _int(values, "API_PORT", 8000, 1, 65535)
    )

    bot_mode, webhook_url, webhook_secret = _webhook(values, secret)
    # PORT is the API's on a Procfile platform; a bot service of its own sets BOT_PORT
    bot_port = _int(values, "BOT_PORT", 8001, 1, 65535)
    redis_url = _redis_url(values)
    sentinels, sentinel_master, cluster = _redis_topology(values, redis_url)

    return Settings(
        auth_secret=Secret(secret),
        redis_url=redis_url,
        telegram_bot_token=Secret(token),
        telegram_api_base_url=base_url,
        telegram_bot_username=values.get("TELEGRAM_BOT_USERNAME", "").strip().lstrip("@"),
        code_length=_int(values, "CODE_LENGTH", 8, 6, 12),
        code_ttl_seconds=_int(values, "CODE_TTL_SECONDS", 300, 10, 86400),
        token_ttl_seconds=_int(values, "TOKEN_TTL_SECONDS", 2592000, 60, 31536000),
        login_request_ttl_seconds=_int(values, "LOGIN_REQUEST_TTL_SECONDS", 300, 10, 3600),
        login_request_limit=_int(values, "LOGIN_REQUEST_LIMIT", 60, 1, 1_000_000),
        login_request_window_seconds=_int(values, "LOGIN_REQUEST_WINDOW_SECONDS", 60, 1, 86400),
        api_keys=_api_keys(values.get("API_KEYS", "")),
        api_host=_api_host(values),
        api_port=api_port,
        issue_limit=_int(values, "CODE_ISSUE_LIMIT", 5, 1, 1000),
        issue_window_seconds=_int(values, "CODE_ISSUE_WINDOW_SECONDS", 600, 1, 86400),
        redeem_fail_limit=_int(values, "REDEEM_FAIL_LIMIT", 10, 1, 100000),
        redeem_fail_window_seconds=_int(values, "REDEEM_FAIL_WINDOW_SECONDS", 600, 1, 86400),
        redeem_fail_alarm_per_minute=_int(
            values, "REDEEM_FAIL_ALARM_PER_MINUTE", 100, 1, 10_000_000
        ),
        ipv6_limit_prefix=_int(values, "IPV6_LIMIT_PREFIX", 64, 1, 128),
        api_key_fail_limit=_int(values, "API_KEY_FAIL_LIMIT", 20, 1, 1_000_000),
        api_key_fail_window_seconds=_int(values, "API_KEY_FAIL_WINDOW_SECONDS", 600, 1, 86400),
        demo_page=_bool(values, "DEMO_PAGE"),
        log_level=_log_level(values),
        bot_mode=bot_mode,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        bot_host=values.get("BOT_HOST", "").strip() or "127.0.0.1",
        bot_port=bot_port,
        bot_send_rate=_int(values, "BOT_SEND_RATE", 30, 1, 100_000),
        redis_timeout=_redis_timeout(values),
        redis_sentinels=sentinels,
        redis_sentinel_master=sentinel_master,
        redis_cluster=cluster,
    )
