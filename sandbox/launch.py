"""`make run`: start the whole system under supervisord, filling in what is missing.

- no `.env`: write one with a fresh random AUTH_SECRET;
- no REDIS_URL: run a private Redis-compatible server, data under var/redis;
- no TELEGRAM_BOT_TOKEN: run the local Telegram sandbox and point the bot at it
  (in webhook mode the sandbox posts updates to the bot on BOT_PORT);
- OpenID Connect clients (OIDC_CLIENTS or OIDC_CLIENTS_FILE) but no
  OIDC_SIGNING_KEY_FILE: a signing key made once under var/oidc/ (0600) and kept for
  the next runs; no OIDC_ISSUER: the local API's URL;
- the demo website on (DEMO_PAGE, 1 unless set) and no OpenID Connect clients: one
  client for the demo, `acme-demo`, confidential, its redirect URI the demo's callback
  on the issuer, its secret made once under var/oidc/ (0600) and kept; the provider
  then starts as above;
- the demo website on, API_KEYS set and no EVENT_WEBHOOKS (nor EVENT_WEBHOOKS_FILE):
  one webhook for the demo's API client (the first of API_KEYS) to the demo's own
  receiver on the local API, its `whsec_` secret made once under var/demo/ (0600) and
  kept, the entry in a file (0600) that EVENT_WEBHOOKS_FILE names. With no API_KEYS the
  API stays open, as the quick start uses it, and has no client to deliver to: the
  demo then shows no events.

It prints where to open the chat page and the API once they answer. A program
that crashes or is killed is restarted (`sandbox.supervision` watches them);
the launcher stops everything only on Ctrl+C (or SIGTERM), or when a program
exits with a configuration error, and then says which. With REDIS_URL and
TELEGRAM_BOT_TOKEN set it starts only the API and the bot, so the same
command serves a VM deployment.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from dotenv import dotenv_values

from sandbox.supervision import Credentials, Supervisor, Watcher, tcp_socket, write_ctl_config
from shared.oidc_keys import write_new_key_file
from shared.settings import SettingsError, load_settings

SANDBOX_TOKEN = "7000000001:SANDBOX-local-token-not-a-real-bot-0000"
DEFAULT_SANDBOX_PORT = "8081"
DEFAULT_BOT_PORT = "8001"
WEBHOOK_PATH = "/telegram/webhook"
STARTUP_TIMEOUT = 60.0
OIDC_KEY_FILE = Path("oidc", "signing-key.pem")  # under var/, when make run makes it
# the demo website's OpenID Connect client, when make run makes it (no clients configured)
DEMO_CLIENT_ID = "acme-demo"
DEMO_CLIENT_NAME = "Acme Shop (demo)"
DEMO_CALLBACK = "/demo/oidc/callback"  # after the issuer: api_worker.demo.CALLBACK_PATH
DEMO_SECRET_FILE = Path("oidc", "demo-client-secret")  # under var/: made once, kept
DEMO_CLIENTS_FILE = Path("oidc", "demo-clients.json")  # under var/: OIDC_CLIENTS_FILE
# the demo's event webhook, when make run makes it (API_KEYS set, no EVENT_WEBHOOKS)
DEMO_RECEIVER = "/demo/webhooks"  # api_worker.demo_events.RECEIVER_PATH
DEMO_WEBHOOK_SECRET_FILE = Path("demo", "webhook-secret")  # under var/: made once, kept
DEMO_WEBHOOKS_FILE = Path("demo", "webhooks.json")  # under var/: EVENT_WEBHOOKS_FILE
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _say(line: str) -> None:
    print(f"tglogin: {line}", flush=True)


def ensure_auth_secret(path: Path) -> bool:
    """Give `.env` a fresh AUTH_SECRET unless it or the environment has one;
    True if one was written."""
    existing = path.read_text() if path.exists() else ""
    if os.environ.get("AUTH_SECRET") or dotenv_values(stream=io.StringIO(existing)).get(
        "AUTH_SECRET"
    ):
        return False
    separator = "" if not existing or existing.endswith("\n") else "\n"
    path.write_text(
        existing + separator
        + "# written by `make run`; keep it secret, keep it the same in every process\n"
        f"AUTH_SECRET={secrets.token_urlsafe(48)}\n"
    )
    path.chmod(0o600)
    return True


def _port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound as supervisord will bind it (`::` for both
    families, so an IPv4 listener on the port counts as taken)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in host:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _url_host(host: str) -> str:
    """Where a browser on this machine reaches a server listening on `host` (`::` takes
    IPv4 too: supervisord's socket is dual-stack)."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def build_environment(root: Path) -> dict[str, str]:
    """The environment supervisord and its programs run with: every ENV_ value
    `supervisord.conf` reads, and the settings the programs share."""
    env = dict(os.environ)
    file_values = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
    for name, value in file_values.items():
        env.setdefault(name, value)
    var = root / "var"
    env["TGLOGIN_VAR"] = str(var)
    env["TGLOGIN_PYTHON"] = sys.executable
    env["TGLOGIN_USER"] = str(os.getuid())  # supervisord names its user: no warning as root
    env.update(Credentials.fresh().as_env())
    env.setdefault("API_PROCESSES", "2")
    env.setdefault("BOT_PROCESSES", "1")
    env.setdefault("DEMO_PAGE", "1")
    env.setdefault("SANDBOX_PORT", DEFAULT_SANDBOX_PORT)
    env["TGLOGIN_PRIVATE_REDIS"] = "false"
    env["TGLOGIN_SANDBOX"] = "false"
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = f"unix://{var}/redis.sock"
        env["TGLOGIN_PRIVATE_REDIS"] = "true"
    webhook = env.get("BOT_MODE", "").strip().lower() == "webhook"
    if not env.get("TELEGRAM_BOT_TOKEN"):
        env["TELEGRAM_BOT_TOKEN"] = SANDBOX_TOKEN
        env["TELEGRAM_API_BASE_URL"] = f"http://127.0.0.1:{env['SANDBOX_PORT']}/bot"
        env["TGLOGIN_SANDBOX"] = "true"
        if webhook and not env.get("WEBHOOK_URL"):
            # the sandbox, like Telegram, posts to it; it takes plain http on loopback
            port = env.get("BOT_PORT") or DEFAULT_BOT_PORT
            env["WEBHOOK_URL"] = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    for name in ("API_PROCESSES", "BOT_PROCESSES", "SANDBOX_PORT"):
        if not env[name].isdigit() or int(env[name]) < 1:
            raise SettingsError(name, f"must be a positive whole number, got {env[name]!r}")
    _oidc_defaults(env, root, var)
    _event_defaults(env, root, var)
    settings = load_settings(env, env_file=root / ".env", require_bot_token=True)
    env["API_HOST"] = settings.api_host
    env["API_PORT"] = str(settings.api_port)
    # supervisord opens it (IPv6 too: `python -m sandbox.supervision`)
    env["TGLOGIN_API_SOCKET"] = tcp_socket(settings.api_host, settings.api_port)
    env["BOT_MODE"] = settings.bot_mode
    env["BOT_HOST"] = settings.bot_host
    env["BOT_PORT"] = str(settings.bot_port)
    # one of the two bot programs starts: [program:bot] polls, [fcgi-program:botweb]
    # serves the webhook on one socket supervisord opens
    env["TGLOGIN_BOT_POLLING"] = str(settings.bot_mode == "polling").lower()
    env["TGLOGIN_BOT_WEBHOOK"] = str(settings.bot_mode == "webhook").lower()
    # supervisord binds an fcgi-program's socket for a moment at start even when the
    # program does not start: in polling mode a file under var/ stands in for BOT_PORT
    env["TGLOGIN_BOT_SOCKET"] = (
        tcp_socket(settings.bot_host, settings.bot_port)
        if settings.bot_mode == "webhook"
        else f"unix://{var}/bot-webhook.sock"
    )
    # API processes share their Prometheus metrics through files here
    env["PROMETHEUS_MULTIPROC_DIR"] = str(var / "metrics")
    return env


def _oidc_configured(env: dict[str, str]) -> bool:
    return bool(env.get("OIDC_CLIENTS", "").strip() or env.get("OIDC_CLIENTS_FILE", "").strip())


def _oidc_defaults(env: dict[str, str], root: Path, var: Path) -> None:
    """With OpenID Connect clients, or with the demo website and none (then the demo's
    client is made): OIDC_SIGNING_KEY_FILE and OIDC_ISSUER where the operator gave none.
    A key made once under var/ (as AUTH_SECRET is made once into .env: every API process
    signs with it, and tokens signed before a restart still verify), and the local API's
    URL, which a browser on this machine reaches."""
    configured = _oidc_configured(env)
    # the settings read without the provider's, which need what is filled in here
    plain = {**env, "OIDC_CLIENTS": "", "OIDC_CLIENTS_FILE": ""}
    api = load_settings(plain, env_file=root / ".env", require_bot_token=True)
    local = f"http://{_url_host(api.api_host)}:{api.api_port}"
    if not configured and not (api.demo_page and _demo_issuer(env, local)):
        return
    if not env.get("OIDC_SIGNING_KEY_FILE", "").strip():
        key_file = var / OIDC_KEY_FILE
        _private_directory(key_file.parent)
        write_new_key_file(key_file)
        env["OIDC_SIGNING_KEY_FILE"] = str(key_file)
    if not env.get("OIDC_ISSUER", "").strip():
        env["OIDC_ISSUER"] = local
    if not configured:
        env["OIDC_CLIENTS_FILE"] = str(_demo_client(var, env["OIDC_ISSUER"]))


def _demo_issuer(env: dict[str, str], local: str) -> bool:
    """Whether the demo's client can have an issuer without the operator's: theirs, or
    the local API's URL where plain http is allowed (loopback). An API listening on
    another address needs an https:// OIDC_ISSUER, which only the operator knows: the
    demo then goes without a client, not make run without a start."""
    return bool(env.get("OIDC_ISSUER", "").strip()) or urlsplit(local).hostname in (
        "127.0.0.1", "localhost", "::1"
    )


def _demo_client(var: Path, issuer: str) -> Path:
    """The demo website's client in a file (0600) for OIDC_CLIENTS_FILE, so that no
    variable of supervisord's programs and no line of output carries its secret: made
    once into var/ (0600) and kept, as the signing key is; its redirect URI is the demo's
    callback on this run's issuer (the API finds its client by it, `api_worker.demo`)."""
    secret_file = var / DEMO_SECRET_FILE
    _private_directory(secret_file.parent)
    with contextlib.suppress(FileExistsError):
        _write_private(secret_file, secrets.token_urlsafe(32) + "\n", exclusive=True)
    client = {
        "client_id": DEMO_CLIENT_ID,
        "name": DEMO_CLIENT_NAME,
        "redirect_uris": [issuer.strip().rstrip("/") + DEMO_CALLBACK],  # as settings read it
        "client_secret": secret_file.read_text().strip(),
    }
    clients_file = var / DEMO_CLIENTS_FILE
    _write_private(clients_file, json.dumps([client], indent=2) + "\n")
    return clients_file


def _event_defaults(env: dict[str, str], root: Path, var: Path) -> None:
    """With the demo on, an API client and no event webhooks: one for the demo's client
    (the first of API_KEYS, the one the demo calls the API as) to the demo's receiver on
    the local API, in a file (0600) that EVENT_WEBHOOKS_FILE names, so that no variable
    carries its secret. Only where plain http is allowed (the API on loopback)."""
    if env.get("EVENT_WEBHOOKS", "").strip() or env.get("EVENT_WEBHOOKS_FILE", "").strip():
        return
    plain = {**env, "EVENT_WEBHOOKS": "", "EVENT_WEBHOOKS_FILE": ""}
    api = load_settings(plain, env_file=root / ".env", require_bot_token=True)
    local = f"http://{_url_host(api.api_host)}:{api.api_port}"
    if not api.demo_page or not api.api_keys or urlsplit(local).hostname not in _LOOPBACK:
        return
    secret_file = var / DEMO_WEBHOOK_SECRET_FILE
    _private_directory(secret_file.parent)
    with contextlib.suppress(FileExistsError):
        made = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        _write_private(secret_file, made + "\n", exclusive=True)
    hook = {
        "client": api.api_keys[0].name,
        "url": local + DEMO_RECEIVER,
        "secret": secret_file.read_text().strip(),
    }
    hooks_file = var / DEMO_WEBHOOKS_FILE
    _write_private(hooks_file, json.dumps([hook], indent=2) + "\n")
    env["EVENT_WEBHOOKS_FILE"] = str(hooks_file)


def _private_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write `path` readable by the user alone from its first byte (whatever the umask);
    `exclusive`: only if it does not exist yet (FileExistsError)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
    except BaseException:
        path.unlink(missing_ok=True)  # never half a secret
        raise


def busy_port(env: dict[str, str]) -> str | None:
    """The line to say when a port the system listens on is taken, else None."""
    wanted = [("API_PORT", env["API_HOST"], int(env["API_PORT"]))]
    if env["TGLOGIN_SANDBOX"] == "true":
        wanted.append(("SANDBOX_PORT", "127.0.0.1", int(env["SANDBOX_PORT"])))
    if env["BOT_MODE"] == "webhook":
        wanted.append(("BOT_PORT", env["BOT_HOST"], int(env["BOT_PORT"])))
    seen: dict[int, str] = {}
    for name, _, port in wanted:
        if port in seen:
            return f"{seen[port]} and {name} are both {port}; set one to another port"
        seen[port] = name
    for name, host, port in wanted:
        if not _port_free(host, port):
            return f"port {port} on {host} is in use; set {name} to another port"
    return None


def main() -> int:
    root = Path.cwd()
    if not (root / "supervisord.conf").is_file():
        _say("run me from the project directory (where supervisord.conf is)")
        return 2
    if ensure_auth_secret(root / ".env"):
        _say("wrote .env with a fresh random AUTH_SECRET")
    try:
        env = build_environment(root)
    except SettingsError as error:
        _say(f"configuration error: {error}")
        return 2
    busy = busy_port(env)
    if busy:
        _say(busy)
        return 2

    var = Path(env["TGLOGIN_VAR"])
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir(parents=True, exist_ok=True)
    for stale in metrics.glob("*.db"):
        stale.unlink()
    (var / "redis").mkdir(parents=True, exist_ok=True)
    credentials = Credentials.from_env(env)
    write_ctl_config(var / "supervisorctl.conf", var / "supervisor.sock", credentials)

    conf = str(root / "supervisord.conf")
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "sandbox.supervision", "-n", "-c", conf], env=env, cwd=root
    )
    stop_asked = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_asked
        stop_asked = True
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    urls = _urls(env)
    checks = [f"{urls['api']}/healthz"] + ([f"{urls['sandbox']}/"] if "sandbox" in urls else [])
    watcher = Watcher(Supervisor(var / "supervisor.sock", credentials), _say)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    up = False
    outcome = 0
    while supervisord.poll() is None and not stop_asked:
        look = watcher.look()
        if look.config_error:
            _say(
                f"{look.config_error} exited with a configuration error (status 2, "
                "its message is above); stopping everything"
            )
            outcome = 2
            stop(signal.SIGTERM, None)
            break
        states = look.states.values()
        ready = bool(states) and all(state in ("RUNNING", "STOPPED") for state in states)
        if not up and ready and all(_answers(url) for url in checks):
            up = True
            _announce(env, urls)
        if not up and time.monotonic() > deadline:
            _say("the system did not come up in time; see the log above")
            outcome = 1
            stop(signal.SIGTERM, None)
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            supervisord.wait(0.2 if not up else 1.0)

    code = supervisord.wait()
    _say("stopped")
    if outcome:
        return outcome
    return code if up else 1


def _urls(env: dict[str, str]) -> dict[str, str]:
    """Where a browser on this machine reaches the API and, if it runs, the sandbox."""
    urls = {"api": f"http://{_url_host(env['API_HOST'])}:{env['API_PORT']}"}
    if env["TGLOGIN_SANDBOX"] == "true":
        urls["sandbox"] = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
    return urls


def _announce(env: dict[str, str], urls: dict[str, str]) -> None:
    _say("running under supervisord; Ctrl+C stops everything")
    if "sandbox" in urls:
        _say(f"chat with the bot (Telegram sandbox): {urls['sandbox']}/")
    _say(f"API: {urls['api']}/  (OpenAPI: {urls['api']}/openapi.json)")
    if env.get("DEMO_PAGE") == "1":
        made = env.get("OIDC_CLIENTS_FILE") == str(Path(env["TGLOGIN_VAR"]) / DEMO_CLIENTS_FILE)
        with_client = f" (Log in with OpenID Connect: client {DEMO_CLIENT_ID})" if made else ""
        _say(f"demo website: {urls['api']}/demo{with_client}")
        if env.get("EVENT_WEBHOOKS_FILE") == str(Path(env["TGLOGIN_VAR"]) / DEMO_WEBHOOKS_FILE):
            _say(f"demo webhook receiver: {urls['api']}{DEMO_RECEIVER} (signed events of "
                 "the first API_KEYS client)")
    if env["BOT_MODE"] == "webhook":
        _say(
            f"bot: {env['BOT_PROCESSES']} webhook processes on {env['BOT_HOST']}:"
            f"{env['BOT_PORT']} for {env['WEBHOOK_URL']}"
        )
    if env["TGLOGIN_PRIVATE_REDIS"] == "true":
        _say(f"private Redis: {env['REDIS_URL']}")
    if _oidc_configured(env):
        _say(
            f"OpenID Connect provider: {env['OIDC_ISSUER']}/.well-known/openid-configuration "
            f"(signing keys in {env['OIDC_SIGNING_KEY_FILE']})"
        )


if __name__ == "__main__":
    sys.exit(main())
