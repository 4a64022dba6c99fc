"""Settings: one frozen object built once from the environment and `.env`.

A missing or invalid value raises `SettingsError` naming the variable; the
entry points turn it into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dotenv import dotenv_values
from redis.connection import parse_url

if TYPE_CHECKING:  # imported when OIDC is on: joserfc and cryptography take 45 ms to load
    from shared.oidc_keys import SigningKeys

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"
# an API key must be long enough that guessing it is hopeless
MIN_API_KEY_LENGTH = 24
# variables used as text (hashed, compared, sent): each must be valid UTF-8
_TEXT_VARIABLES = (
    "AUTH_SECRET", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_BASE_URL", "TELEGRAM_BOT_USERNAME",
    "REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "API_KEYS", "API_HOST",
    "WEBHOOK_URL", "WEBHOOK_SECRET", "BOT_HOST",
    "OIDC_ISSUER", "OIDC_CLIENTS", "OIDC_CLIENTS_FILE", "OIDC_SIGNING_KEY_FILE",
    "EVENT_WEBHOOKS", "EVENT_WEBHOOKS_FILE",
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
class OidcClient:
    """One OpenID Connect client (relying party) of OIDC_CLIENTS."""

    client_id: str
    # what the bot shows the user ("Log in to <name>?"), control characters removed
    name: str
    # compared exactly, as registered
    redirect_uris: tuple[str, ...]
    # None: a public client (PKCE required); else a confidential one, authenticated by
    # client_secret_basic or client_secret_post
    client_secret: Secret | None = None

    @property
    def confidential(self) -> bool:
        return self.client_secret is not None


@dataclass(frozen=True)
class OidcSettings:
    """The OpenID Connect provider: on when OIDC_CLIENTS (or OIDC_CLIENTS_FILE) is set."""

    # public base URL without a trailing slash: the `iss` of every token, the prefix of
    # every endpoint in the discovery document
    issuer: str
    clients: tuple[OidcClient, ...]
    # from OIDC_SIGNING_KEY_FILE: the first key signs, all are published
    signing_keys: SigningKeys

    def client(self, client_id: str) -> OidcClient | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


@dataclass(frozen=True)
class EventWebhook:
    """One endpoint of EVENT_WEBHOOKS: the client whose events it gets, where, signed
    with which secrets (two during a rotation), for which types (None: all)."""

    client: str
    url: str
    secrets: tuple[Secret, ...]
    events: frozenset[str] | None = None

    def wants(self, type_: str) -> bool:
        return self.events is None or type_ in self.events


# Standard Webhooks' schedule: the waits after each failed attempt (s)
DEFAULT_EVENT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


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
    # the OpenID Connect provider; None: off
    oidc: OidcSettings | None = None
    # push approvals: how long one waits for the user's tap, and how many may be pushed
    # to one user by each API client, to one user by all clients together, and by one
    # API client in their windows
    approval_ttl_seconds: int = 300
    approval_user_limit: int = 5
    approval_user_total_limit: int = 30
    approval_user_window_seconds: int = 600
    approval_client_limit: int = 1000
    approval_client_window_seconds: int = 600
    # event webhooks (EVENT_WEBHOOKS) and their delivery: the waits between attempts,
    # how long after the first attempt an event is still retried, each attempt's timeout,
    # how long a deliverer's unacknowledged wake waits before another process claims it
    event_webhooks: tuple[EventWebhook, ...] = ()
    event_retry_schedule: tuple[float, ...] = DEFAULT_EVENT_RETRY_SCHEDULE
    event_retry_seconds: int = 86400
    event_timeout_seconds: float = 10.0
    event_claim_idle_seconds: float = 10.0

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


# -- OpenID Connect ------------------------------------------------------------------------

# a client secret must be long enough that guessing it is hopeless, as an API key
MIN_CLIENT_SECRET_LENGTH = MIN_API_KEY_LENGTH
MAX_CLIENT_NAME = 100  # characters of a client's name; the bot puts it in a sentence
# client ids: RFC 3986 unreserved characters, so they go into URLs, forms, Basic
# credentials, logs and error lines as they are
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_CLIENT_FIELDS = frozenset({"client_id", "name", "redirect_uris", "client_secret"})
# where http:// is allowed: this machine only (RFC 8252 7.3, loopback redirects)
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LOOPBACK_HINT = "http:// only for 127.0.0.1, localhost or [::1]"


def _oidc_issuer(values: Mapping[str, str]) -> str:
    """OIDC_ISSUER: an https:// base URL (http:// on loopback), without a trailing slash."""
    raw = values.get("OIDC_ISSUER", "").strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise SettingsError("OIDC_ISSUER", f"is not a URL: {raw!r}") from None
    if parts.username is not None:  # never echo it: it may hold a password
        raise SettingsError("OIDC_ISSUER", "must have no user name or password")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError("OIDC_ISSUER", f"must be an https:// URL, got {raw!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise SettingsError("OIDC_ISSUER", f"must be https:// ({_LOOPBACK_HINT}), got {raw!r}")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise SettingsError("OIDC_ISSUER", "must have no query or fragment (OpenID Discovery)")
    return raw.rstrip("/")


def _redirect_uri(variable: str, client_id: str, uri: object) -> str:
    where = f"client {client_id!r}:"
    if not isinstance(uri, str) or not uri:
        raise SettingsError(variable, f"{where} redirect_uris must be non-empty strings")
    if any(unicodedata.category(c)[0] in "CZ" for c in uri):
        raise SettingsError(variable, f"{where} redirect URI {uri!r} has spaces or controls")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise SettingsError(variable, f"{where} redirect URI {uri!r} is not a URL") from None
    if parts.username is not None:  # never echo it: it may hold a password
        raise SettingsError(variable, f"{where} a redirect URI must have no user name")
    if not parts.scheme:
        raise SettingsError(variable, f"{where} redirect URI {uri!r} must be absolute")
    if parts.scheme not in ("https", "http"):
        # custom schemes (com.example.app:/cb) name no host the bot could show, and any
        # app may claim one; native apps use a loopback redirect (RFC 8252 7.3)
        raise SettingsError(
            variable, f"{where} redirect URI {uri!r} must be https:// ({_LOOPBACK_HINT})"
        )
    if not parts.hostname:
        raise SettingsError(variable, f"{where} redirect URI {uri!r} needs a host")
    if parts.fragment or "#" in uri:
        raise SettingsError(variable, f"{where} redirect URI {uri!r} must have no fragment")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise SettingsError(
            variable, f"{where} redirect URI {uri!r} must be https:// ({_LOOPBACK_HINT})"
        )
    return uri


def _name_character(c: str) -> str:
    category = unicodedata.category(c)
    if c in "\t\n\r" or category in ("Zl", "Zp"):
        return " "
    return "" if category[0] == "C" else c  # controls, format, private use, unassigned


def _client_name(variable: str, client_id: str, raw: object) -> str:
    """The name without control or format characters (line breaks, bidirectional
    overrides that could turn a name around in the bot's message), spaces collapsed."""
    if not isinstance(raw, str):
        raise SettingsError(variable, f"client {client_id!r}: name must be a string")
    name = " ".join("".join(_name_character(c) for c in raw).split())
    if not name:
        raise SettingsError(variable, f"client {client_id!r}: name must not be empty")
    if len(name) > MAX_CLIENT_NAME:
        raise SettingsError(
            variable, f"client {client_id!r}: name must be at most {MAX_CLIENT_NAME} characters"
        )
    return name


def _oidc_client(variable: str, n: int, entry: object) -> OidcClient:
    if not isinstance(entry, dict):
        raise SettingsError(variable, f"client {n} must be a JSON object")
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        raise SettingsError(
            variable, f"client {n}: client_id must be 1-128 characters of A-Z a-z 0-9 . _ ~ -"
        )
    unknown = sorted(set(entry) - _CLIENT_FIELDS)
    if unknown:
        raise SettingsError(
            variable, f"client {client_id!r}: unknown field {unknown[0]!r} (known: "
            f"{', '.join(sorted(_CLIENT_FIELDS))})"
        )
    name = _client_name(variable, client_id, entry.get("name"))
    uris = entry.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise SettingsError(variable, f"client {client_id!r}: redirect_uris must be a "
                                      "non-empty array of URLs")
    redirect_uris = tuple(dict.fromkeys(_redirect_uri(variable, client_id, u) for u in uris))
    secret: Secret | None = None
    if "client_secret" in entry:
        raw = entry["client_secret"]
        if not isinstance(raw, str):
            raise SettingsError(variable, f"client {client_id!r}: client_secret must be a string")
        if len(raw) < MIN_CLIENT_SECRET_LENGTH:
            raise SettingsError(
                variable, f"client {client_id!r}: client_secret must be at least "
                f"{MIN_CLIENT_SECRET_LENGTH} characters (has {len(raw)}); leave it out for a "
                "public client",
            )
        secret = Secret(raw)
    return OidcClient(client_id, name, redirect_uris, secret)


def _oidc_clients(values: Mapping[str, str]) -> tuple[str, tuple[OidcClient, ...]]:
    """OIDC_CLIENTS or OIDC_CLIENTS_FILE: the variable the clients came from, and them
    (("", ()) when neither is set)."""
    inline = values.get("OIDC_CLIENTS", "").strip()
    path = values.get("OIDC_CLIENTS_FILE", "").strip()
    if inline and path:
        raise SettingsError("OIDC_CLIENTS_FILE", "cannot be combined with OIDC_CLIENTS")
    if not inline and not path:
        return "", ()
    variable, text = "OIDC_CLIENTS", inline
    if path:
        variable = "OIDC_CLIENTS_FILE"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(variable, f"cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SettingsError(variable, "must be UTF-8 text") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:  # its message quotes no text, only places
        raise SettingsError(variable, f"is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise SettingsError(variable, "must be a JSON array of at least one client")
    try:
        json.dumps(entries, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" is JSON, but no UTF-8 text
        raise SettingsError(variable, "must be valid UTF-8 text") from None
    clients = [_oidc_client(variable, n, entry) for n, entry in enumerate(entries, 1)]
    seen: set[str] = set()
    for client in clients:
        if client.client_id in seen:
            raise SettingsError(variable, f"client {client.client_id!r} is listed twice")
        seen.add(client.client_id)
    return variable, tuple(clients)


def _oidc(values: Mapping[str, str]) -> OidcSettings | None:
    """The provider's settings, or None when no client is configured."""
    issuer = _oidc_issuer(values)
    variable, clients = _oidc_clients(values)
    if not clients:
        return None
    if not issuer:
        raise SettingsError("OIDC_ISSUER", f"is required with {variable}: the public base URL")
    key_file = values.get("OIDC_SIGNING_KEY_FILE", "").strip()
    if not key_file:
        raise SettingsError(
            "OIDC_SIGNING_KEY_FILE", f"is required with {variable}: a PEM file of RSA keys"
        )
    from shared.oidc_keys import KeyFileError, SigningKeys

    try:
        keys = SigningKeys.from_file(key_file)
    except KeyFileError as exc:
        raise SettingsError("OIDC_SIGNING_KEY_FILE", str(exc)) from None
    return OidcSettings(issuer=issuer, clients=clients, signing_keys=keys)


# -- event webhooks ------------------------------------------------------------------------

_WEBHOOK_FIELDS = frozenset({"client", "url", "secret", "events"})
# a signing secret's key, decoded: Standard Webhooks asks for 24 to 64 bytes
_WHSEC_BYTES = (24, 64)
_WHSEC_PREFIX = "whsec_"


def _whsec(where: str, raw: object) -> Secret:
    """A `whsec_<base64>` secret; the error never quotes it."""
    problem = f"{where}: secret must be 'whsec_' and base64 of {_WHSEC_BYTES[0]}-" \
              f"{_WHSEC_BYTES[1]} random bytes"
    if not isinstance(raw, str) or not raw.startswith(_WHSEC_PREFIX):
        raise SettingsError("EVENT_WEBHOOKS", problem)
    text = raw[len(_WHSEC_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError("EVENT_WEBHOOKS", problem) from None
    if not _WHSEC_BYTES[0] <= len(key) <= _WHSEC_BYTES[1]:
        raise SettingsError("EVENT_WEBHOOKS", problem)
    return Secret(raw)


def _webhook_url(where: str, raw: object) -> str:
    """https://, or http:// on loopback; never echoed (it may carry a token in its path)."""
    if not isinstance(raw, str) or not raw or any(c.isspace() for c in raw):
        raise SettingsError("EVENT_WEBHOOKS", f"{where}: url must be a URL without spaces")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise SettingsError("EVENT_WEBHOOKS", f"{where}: url is not a URL") from None
    if parts.username is not None or parts.fragment or not parts.hostname:
        raise SettingsError(
            "EVENT_WEBHOOKS", f"{where}: url needs a host, and no user name or fragment"
        )
    if parts.scheme != "https" and not (
        parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    ):
        raise SettingsError("EVENT_WEBHOOKS", f"{where}: url must be https:// ({_LOOPBACK_HINT})")
    return raw


def _event_webhooks(
    values: Mapping[str, str], clients: tuple[ApiClient, ...]
) -> tuple[EventWebhook, ...]:
    """EVENT_WEBHOOKS (or EVENT_WEBHOOKS_FILE, a file holding the same JSON, so that no
    variable carries a secret): entries of one client and url merged (two secrets at
    most). An error in the file's entries names EVENT_WEBHOOKS_FILE."""
    raw = values.get("EVENT_WEBHOOKS", "").strip()
    path = values.get("EVENT_WEBHOOKS_FILE", "").strip()
    if raw and path:
        raise SettingsError("EVENT_WEBHOOKS_FILE", "cannot be combined with EVENT_WEBHOOKS")
    if not path:
        return _event_webhook_entries(raw, clients)
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError("EVENT_WEBHOOKS_FILE", f"cannot be read: {exc.strerror or exc}") \
            from None
    except UnicodeDecodeError:
        raise SettingsError("EVENT_WEBHOOKS_FILE", "must be UTF-8 text") from None
    try:
        return _event_webhook_entries(text, clients)
    except SettingsError as exc:
        problem = str(exc).removeprefix("EVENT_WEBHOOKS ")
        raise SettingsError("EVENT_WEBHOOKS_FILE", problem) from None


def _event_webhook_entries(
    raw: str, clients: tuple[ApiClient, ...]
) -> tuple[EventWebhook, ...]:
    from shared.events import EVENT_TYPES

    if not raw:
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:  # its message quotes no text, only places
        raise SettingsError("EVENT_WEBHOOKS", f"is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise SettingsError("EVENT_WEBHOOKS", "must be a JSON array of endpoints")
    names = {client.name for client in clients}
    merged: dict[tuple[str, str], EventWebhook] = {}
    for n, entry in enumerate(entries, 1):
        where = f"endpoint {n}"
        if not isinstance(entry, dict):
            raise SettingsError("EVENT_WEBHOOKS", f"{where} must be a JSON object")
        unknown = sorted(set(entry) - _WEBHOOK_FIELDS)
        if unknown:
            raise SettingsError("EVENT_WEBHOOKS", f"{where}: unknown field {unknown[0]!r}")
        client = entry.get("client")
        if not isinstance(client, str) or client not in names:
            raise SettingsError(
                "EVENT_WEBHOOKS", f"{where}: client must be the name of an API_KEYS client"
            )
        url = _webhook_url(where, entry.get("url"))
        secret = _whsec(where, entry.get("secret"))
        events: frozenset[str] | None = None
        if "events" in entry:
            listed = entry["events"]
            if not isinstance(listed, list) or not listed or not all(
                isinstance(t, str) for t in listed
            ):
                raise SettingsError(
                    "EVENT_WEBHOOKS", f"{where}: events must be a non-empty array of types"
                )
            strange = sorted(set(listed) - set(EVENT_TYPES))
            if strange:
                raise SettingsError(
                    "EVENT_WEBHOOKS", f"{where}: unknown event type {strange[0][:40]!r} "
                    f"(known: {', '.join(EVENT_TYPES)})"
                )
            events = frozenset(listed)
        before = merged.get((client, url))
        if before is None:
            merged[(client, url)] = EventWebhook(client, url, (secret,), events)
            continue
        if before.events != events:
            raise SettingsError(
                "EVENT_WEBHOOKS", f"{where}: entries of one client and url (a secret "
                "rotation) must list the same events"
            )
        if secret in before.secrets:
            raise SettingsError("EVENT_WEBHOOKS", f"{where}: repeats an entry's secret")
        if len(before.secrets) >= 2:
            raise SettingsError(
                "EVENT_WEBHOOKS", f"{where}: at most two secrets per client and url "
                "(the old and the new during a rotation)"
            )
        merged[(client, url)] = EventWebhook(client, url, (*before.secrets, secret), events)
    return tuple(merged.values())


def _retry_schedule(values: Mapping[str, str]) -> tuple[float, ...]:
    raw = values.get("EVENT_RETRY_SCHEDULE", "").strip()
    if not raw:
        return DEFAULT_EVENT_RETRY_SCHEDULE
    try:
        waits = tuple(float(p) for p in raw.split(","))
    except ValueError:
        raise SettingsError(
            "EVENT_RETRY_SCHEDULE", f"must be seconds separated by commas, got {raw!r}"
        ) from None
    if not 1 <= len(waits) <= 50 or not all(0.1 <= w <= 7 * 86400 for w in waits):
        raise SettingsError(
            "EVENT_RETRY_SCHEDULE", "must be 1-50 waits, each 0.1 s to 7 days"
        )
    return waits


def _seconds(values: Mapping[str, str], name: str, default: float, low: float,
             high: float) -> float:
    raw = values.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise SettingsError(name, f"must be between {low:g} and {high:g} seconds, got {raw}")
    return value


def _bool(values: Mapping[str, str], name: str) -> bool:
    raw = values.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(name, f"must be 1 or 0, got {raw!r}")


# an issue reads every slot that may hold a user's code (shared.codes): at most this many
MAX_CODE_SLOTS = 2000


def code_windows(code_ttl_seconds: int, issue_window_seconds: int) -> int:
    """How many issue windows, the current one and those before it, may hold a code of a
    user that still counts: its key lives max(code TTL, window) from its issue."""
    return -(-max(code_ttl_seconds, issue_window_seconds) // issue_window_seconds) + 1


def _issue_limit(values: Mapping[str, str]) -> tuple[int, int]:
    ttl = _int(values, "CODE_TTL_SECONDS", 300, 10, 86400)
    limit = _int(values, "CODE_ISSUE_LIMIT", 5, 1, 1000)
    window = _int(values, "CODE_ISSUE_WINDOW_SECONDS", 600, 1, 86400)
    slots = limit * code_windows(ttl, window)
    if slots > MAX_CODE_SLOTS:
        raise SettingsError(
            "CODE_ISSUE_WINDOW_SECONDS",
            f"is too short for CODE_TTL_SECONDS={ttl} and CODE_ISSUE_LIMIT={limit}: an issue "
            f"would read {slots} code slots (at most {MAX_CODE_SLOTS}); use a window nearer "
            "the code's lifetime or a lower limit",
        )
    return limit, window


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

    issue_limit, issue_window = _issue_limit(values)
    api_keys = _api_keys(values.get("API_KEYS", ""))

    settings = Settings(
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
        api_keys=api_keys,
        api_host=_api_host(values),
        api_port=api_port,
        issue_limit=issue_limit,
        issue_window_seconds=issue_window,
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
        oidc=_oidc(values),
        approval_ttl_seconds=_int(values, "APPROVAL_TTL_SECONDS", 300, 2, 3600),
        approval_user_limit=_int(values, "APPROVAL_USER_LIMIT", 5, 1, 1000),
        approval_user_total_limit=_int(values, "APPROVAL_USER_TOTAL_LIMIT", 30, 1, 100_000),
        approval_user_window_seconds=_int(values, "APPROVAL_USER_WINDOW_SECONDS", 600, 1, 86400),
        approval_client_limit=_int(values, "APPROVAL_CLIENT_LIMIT", 1000, 1, 1_000_000),
        approval_client_window_seconds=_int(
            values, "APPROVAL_CLIENT_WINDOW_SECONDS", 600, 1, 86400
        ),
        event_webhooks=_event_webhooks(values, api_keys),
        event_retry_schedule=_retry_schedule(values),
        event_retry_seconds=_int(values, "EVENT_RETRY_SECONDS", 86400, 1, 30 * 86400),
        event_timeout_seconds=_seconds(values, "EVENT_TIMEOUT_SECONDS", 10.0, 0.1, 60.0),
        event_claim_idle_seconds=_seconds(
            values, "EVENT_CLAIM_IDLE_SECONDS", 10.0, 0.5, 3600.0
        ),
    )
    _distinct_client_names(settings)
    return settings


# the bytes of its API client's name an API token's session keeps at the least (from an
# IPv6 address: shared.tokens.field_tail); a longer name is cut there
SESSION_NAME_BYTES = 31


def _cut(name: str) -> bytes:
    return name.encode()[:SESSION_NAME_BYTES].decode(errors="ignore").encode()


def _distinct_client_names(settings: Settings) -> None:
    """Refuse two API_KEYS names a session could not tell apart: an API token's session
    keeps a name's first SESSION_NAME_BYTES bytes at the least (a shorter name whole),
    and finds its client again as the name it is, or as the one API_KEYS name that
    starts so. If a name starts as a longer name's cut does, a session of the longer
    one could be taken for it (its events going to the wrong client) or for neither.
    (An OpenID Connect session is looked up among OIDC_CLIENTS names, and tells no
    client of anything: a cut there only shortens what /sessions shows.)"""
    names = [client.name for client in settings.api_keys]
    for name in names:
        cut = _cut(name)
        if cut == name.encode():  # kept whole: found again by itself
            continue
        for other in names:
            if other != name and other.encode().startswith(cut):
                raise SettingsError(
                    "API_KEYS",
                    f"names {name!r} and {other!r} begin alike: sessions keep only the "
                    f"first {SESSION_NAME_BYTES} bytes of a name, so names must differ "
                    "within them",
                )
