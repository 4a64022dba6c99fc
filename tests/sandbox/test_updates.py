"""getUpdates long polling, offsets, the two 409 conflicts, and webhook delivery."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.fixtures.common import wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token


def _poll(sandbox: TelegramSandbox, token: str, **params: Any) -> httpx.Response:
    with httpx.Client(timeout=30, trust_env=False) as client:
        return client.post(f"{sandbox.api_base}{token}/getUpdates", json=params)


def _pending(sandbox: TelegramSandbox) -> bool:
    return any(bot["get_updates_pending"] for bot in sandbox.bots())


def test_offset_confirms_earlier_updates(sandbox: TelegramSandbox) -> None:
    token = make_token()
    ids = [sandbox.send(f"m{i}", token=token)["update_id"] for i in range(3)]
    first = sandbox.api(token, "getUpdates").json()["result"]
    assert [u["update_id"] for u in first] == ids
    assert [u["update_id"] for u in sandbox.api(token, "getUpdates").json()["result"]] == ids
    rest = sandbox.api(token, "getUpdates", offset=ids[1]).json()["result"]
    assert [u["update_id"] for u in rest] == ids[1:]
    assert sandbox.api(token, "getUpdates", offset=ids[2] + 1).json()["result"] == []
    limited = sandbox.send("m3", token=token)["update_id"]
    sandbox.send("m4", token=token)
    assert [u["update_id"] for u in sandbox.api(token, "getUpdates", limit=1).json()["result"]] == [
        limited
    ]


def test_long_poll_answers_as_soon_as_an_update_arrives(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        future = pool.submit(_poll, sandbox, token, timeout=20)
        wait_until(lambda: _pending(sandbox), what="the long poll to be pending")
        sandbox.send("wake up", token=token)
        response = future.result(timeout=10)
    assert time.monotonic() - started < 10
    assert [u["message"]["text"] for u in response.json()["result"]] == ["wake up"]


def test_a_second_get_updates_ends_the_first_with_409(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_poll, sandbox, token, timeout=20)
        wait_until(lambda: _pending(sandbox), what="the first long poll to be pending")
        second = sandbox.api(token, "getUpdates", timeout=0)
        older = first.result(timeout=10)
    assert second.status_code == 200
    assert older.status_code == 409
    assert older.json()["description"] == (
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running"
    )
    (bot,) = sandbox.bots()
    assert bot["get_updates_calls"] == 2
    assert bot["get_updates_pending"] is False


@dataclass
class Receiver:
    """A local webhook endpoint that records each request and answers from `statuses`."""

    server: ThreadingHTTPServer
    received: queue.Queue[tuple[dict[str, str], Any]] = field(default_factory=queue.Queue)
    statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def next(self, timeout: float = 10) -> tuple[dict[str, str], Any]:
        return self.received.get(timeout=timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hook = holder[0]
            status = hook.statuses.pop(0) if hook.statuses else 200
            hook.received.put((dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_webhook_gets_updates_with_the_secret_header(
    sandbox: TelegramSandbox, receiver: Receiver
) -> None:
    token = make_token()
    set_hook = sandbox.api(token, "setWebhook", url=receiver.url, secret_token="s3cret_-X")
    assert set_hook.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    sent = sandbox.send("/start", token=token)
    headers, update = receiver.next()
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret_-X"
    assert update["update_id"] == sent["update_id"]
    assert update["message"]["text"] == "/start"

    conflict = sandbox.api(token, "getUpdates")
    assert conflict.status_code == 409
    assert conflict.json()["description"] == (
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first"
    )
    info = sandbox.api(token, "getWebhookInfo").json()["result"]
    assert info["url"] == receiver.url
    assert info["has_custom_certificate"] is False

    assert sandbox.api(token, "deleteWebhook").json()["result"] is True
    assert sandbox.api(token, "getWebhookInfo").json()["result"]["url"] == ""
    assert sandbox.api(token, "getUpdates").status_code == 200


def test_webhook_retries_in_order_until_2xx(sandbox: TelegramSandbox, receiver: Receiver) -> None:
    token = make_token()
    receiver.statuses = [500, 502]
    assert sandbox.api(token, "setWebhook", url=receiver.url).json()["ok"] is True
    first = sandbox.send("one", token=token)["update_id"]
    second = sandbox.send("two", token=token)["update_id"]
    deliveries = [receiver.next() for _ in range(4)]
    assert [update["update_id"] for _, update in deliveries] == [first, first, first, second]
    assert "X-Telegram-Bot-Api-Secret-Token" not in deliveries[0][0]  # no secret was set

    def settled() -> dict[str, Any] | None:
        info: dict[str, Any] = sandbox.api(token, "getWebhookInfo").json()["result"]
        return info if info["pending_update_count"] == 0 else None

    info = wait_until(settled, what="the webhook queue to drain")
    assert info["last_error_message"] == "Wrong response from the webhook: 502 Bad Gateway"
    assert isinstance(info["last_error_date"], int)


def test_a_pending_long_poll_ends_with_409_when_a_webhook_is_set(
    sandbox: TelegramSandbox, receiver: Receiver
) -> None:
    token = make_token()
    sandbox.api(token, "getMe")
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(_poll, sandbox, token, timeout=20)
        wait_until(lambda: _pending(sandbox), what="the long poll to be pending")
        sandbox.api(token, "setWebhook", url=receiver.url)
        assert poll.result(timeout=10).status_code == 409


def test_webhook_url_rules(sandbox: TelegramSandbox) -> None:
    token = make_token()
    remote_http = sandbox.api(token, "setWebhook", url="http://example.com/hook")
    assert remote_http.status_code == 400
    bad_secret = sandbox.api(token, "setWebhook", url="https://example.com/h", secret_token="a b")
    assert bad_secret.status_code == 400
    assert sandbox.api(token, "deleteWebhook").json()["description"] == (
        "Webhook is already deleted"
    )


def test_drop_pending_updates(sandbox: TelegramSandbox, receiver: Receiver) -> None:
    token = make_token()
    sandbox.send("old", token=token)
    receiver.statuses = []
    sandbox.api(token, "setWebhook", url=receiver.url, drop_pending_updates=True)
    sent = sandbox.send("new", token=token)
    assert receiver.next()[1]["update_id"] == sent["update_id"]
