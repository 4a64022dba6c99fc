"""The sandbox's control interface refuses what another website could make a visitor's
browser send: a foreign Host (DNS rebinding), a foreign Origin, a body that is not
JSON. The private Redis of `make run` never evicts and keeps its files private.

Real processes: the session's sandbox, and `python -m sandbox.redis_server`."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from tests.fixtures.common import PYTHON, ROOT, free_port, stop, wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token

CONTROL_GETS = ["/control/bots", "/control/limits", "/control/calls?token={token}"]
CONTROL_POSTS = {
    "/control/messages": {"text": "hi", "token": "{token}"},
    "/control/limits": {},
    "/control/faults": {"method": "sendMessage", "count": 0, "token": "{token}"},
    "/control/release": {"method": "sendMessage", "token": "{token}"},
    "/control/block": {"chat_id": 1, "blocked": False, "token": "{token}"},
    "/control/reset": {},
}


def _raw(sandbox: TelegramSandbox) -> httpx.Client:
    return httpx.Client(base_url=sandbox.url, timeout=10, trust_env=False)


def _filled(value: object, token: str) -> object:
    if isinstance(value, dict):
        return {k: _filled(v, token) for k, v in value.items()}
    return token if value == "{token}" else value


def test_a_foreign_host_is_refused(sandbox: TelegramSandbox) -> None:
    token = make_token()
    with _raw(sandbox) as client:
        for host in (
            "evil.example", f"evil.example:{sandbox.port}", "127.0.0.1.evil.example",
            f"127.0.0.1:{sandbox.port + 1}", "127.0.0.1", "",
        ):
            for path in CONTROL_GETS:
                refused = client.get(path.format(token=token), headers={"Host": host})
                assert refused.status_code == 403, (host, path, refused.text)
                assert refused.json()["error"] == "forbidden"
            posted = client.post("/control/messages", json={"text": "hi", "token": token},
                                 headers={"Host": host})
            assert posted.status_code == 403, host
        for host in (f"127.0.0.1:{sandbox.port}", f"localhost:{sandbox.port}",
                     f"LOCALHOST:{sandbox.port}", f"[::1]:{sandbox.port}"):
            assert client.get("/control/bots", headers={"Host": host}).status_code == 200, host
    # nothing the refused requests asked for happened
    assert sandbox.bots() == []


def test_a_foreign_origin_is_refused(sandbox: TelegramSandbox) -> None:
    token = make_token()
    with _raw(sandbox) as client:
        for origin in ("http://evil.example", "null", f"http://evil.example:{sandbox.port}",
                       f"https://127.0.0.1:{sandbox.port}", f"http://127.0.0.1:{sandbox.port + 1}"):
            for path, body in CONTROL_POSTS.items():
                refused = client.post(path, json=_filled(body, token), headers={"Origin": origin})
                assert refused.status_code == 403, (origin, path, refused.text)
            assert client.get("/control/bots", headers={"Origin": origin}).status_code == 403
        cross_site = client.get("/control/bots", headers={"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        # the sandbox's own chat page: its origin, however it was opened
        for origin in (sandbox.url, f"http://localhost:{sandbox.port}"):
            own = client.post(
                "/control/messages", json={"text": "hi", "token": token},
                headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
            )
            assert own.status_code == 200, own.text


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonp", "text/json"],
)
def test_a_body_that_is_not_declared_json_is_refused(
    sandbox: TelegramSandbox, content_type: str | None
) -> None:
    token = make_token()
    headers = {"Content-Type": content_type} if content_type else {}
    with _raw(sandbox) as client:
        for path, body in CONTROL_POSTS.items():
            content = httpx.Request("POST", "/", json=_filled(body, token)).content
            refused = client.post(path, content=content, headers=headers)
            assert refused.status_code == 415, (path, content_type, refused.text)
            assert refused.json()["error"] == "unsupported_media_type"
        accepted = client.post(
            "/control/messages", content=b'{"text": "hi", "token": "%s"}' % token.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert accepted.status_code == 200, accepted.text


def test_the_chat_page_sends_json_from_its_own_origin() -> None:
    """What app.js does for every control call (the browser test drives it for real)."""
    script = (ROOT / "sandbox" / "telegram" / "static" / "app.js").read_text()
    assert 'headers: body ? { "Content-Type": "application/json" } : {}' in script
    assert "new URL(path, location.origin)" in script


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_private_redis_never_evicts_and_keeps_its_files_private(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)
    (data / "left-by-an-older-run.aof").write_text("")
    (data / "left-by-an-older-run.aof").chmod(0o644)
    port = free_port()
    with open(tmp_path / "redis.log", "wb") as log:
        proc = subprocess.Popen(
            [PYTHON, "-m", "sandbox.redis_server", "--port", str(port), "--dir", str(data)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=5)
        wait_until(client.ping, timeout=15, what="the private Redis to answer")
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("tgl:probe", "x")
        client.execute_command("BGREWRITEAOF")
        wait_until(lambda: any(p.is_file() for p in data.rglob("*.aof*")), what="AOF files")
        wait_until(
            lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0,
            what="the AOF rewrite to finish",
        )
        client.close()
        assert _mode(data) == 0o700
        files = [p for p in data.rglob("*") if p.is_file()]
        assert files
        for path in data.rglob("*"):
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
    finally:
        stop(proc)
