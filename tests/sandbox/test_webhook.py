"""Webhook delivery as Telegram does it: the secret header, retries until 2xx, chats delivered
side by side but each chat in order, max_connections, and the record of attempts."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.fixtures.common import free_port, wait_until
from tests.fixtures.sandbox import TelegramSandbox, make_token


def _chat_of(update: dict[str, Any]) -> int | None:
    message = update.get("message") or update.get("callback_query", {}).get("message") or {}
    chat_id = message.get("chat", {}).get("id")
    return chat_id if isinstance(chat_id, int) else None


@dataclass
class Receiver:
    """A local webhook endpoint. It records each request and answers from `statuses` (then
    200); with `gated` it holds each request until `release(update_id)`. It notes how many
    requests were in flight at most and any update that came while its chat had one in flight."""

    server: ThreadingHTTPServer
    received: queue.Queue[tuple[dict[str, str], Any]] = field(default_factory=queue.Queue)
    statuses: list[int] = field(default_factory=list)
    gated: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: set[int] = field(default_factory=set)  # update ids in flight
    chats: dict[int | None, int] = field(default_factory=dict)  # requests in flight per chat
    most_in_flight: int = 0
    overlaps: list[int] = field(default_factory=list)
    gates: dict[int, threading.Event] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def next(self, timeout: float = 10) -> tuple[dict[str, str], Any]:
        return self.received.get(timeout=timeout)

    def holding(self) -> set[int]:
        with self.lock:
            return set(self.held)

    def release(self, *update_ids: int) -> None:
        with self.lock:
            for update_id in update_ids:
                self.gates.setdefault(update_id, threading.Event()).set()

    def open_all(self) -> None:
        with self.lock:
            self.gated = False
            for gate in self.gates.values():
                gate.set()

    def handle(self, update: dict[str, Any], headers: dict[str, str]) -> int:
        update_id, chat = update["update_id"], _chat_of(update)
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            if self.chats.get(chat):
                self.overlaps.append(update_id)
            self.chats[chat] = self.chats.get(chat, 0) + 1
            self.held.add(update_id)
            self.most_in_flight = max(self.most_in_flight, len(self.held))
            gate = self.gates.setdefault(update_id, threading.Event()) if self.gated else None
        self.received.put((headers, update))
        if gate is not None:
            gate.wait(30)
        with self.lock:
            self.chats[chat] -= 1
            self.held.discard(update_id)
        return status


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = holder[0].handle(body, dict(self.headers.items()))
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
    holder[0].open_all()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "first_name": f"U{user_id}"}


def _drained(sandbox: TelegramSandbox, token: str) -> dict[str, Any] | None:
    info: dict[str, Any] = sandbox.api(token, "getWebhookInfo").json()["result"]
    return info if info["pending_update_count"] == 0 else None


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

    info = wait_until(lambda: _drained(sandbox, token), what="the webhook queue to drain")
    assert info["last_error_message"] == "Wrong response from the webhook: 502 Bad Gateway"
    assert isinstance(info["last_error_date"], int)
    attempts = sandbox.calls(token, "webhook")
    assert [(c["status"], c["update_id"], c["chat_id"]) for c in attempts] == [
        (500, first, 1001), (502, first, 1001), (200, first, 1001), (200, second, 1001)
    ]



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


def test_chats_are_delivered_side_by_side_and_each_chat_in_order(
    sandbox: TelegramSandbox, receiver: Receiver
) -> None:
    token = make_token()
    receiver.gated = True
    sandbox.api(token, "setWebhook", url=receiver.url)
    a1, a2 = (sandbox.send(t, user=_user(1), token=token)["update_id"] for t in ("a1", "a2"))
    b1 = sandbox.send("b1", user=_user(2), token=token)["update_id"]
    wait_until(lambda: receiver.holding() == {a1, b1}, what="a1 and b1 in flight together")
    receiver.release(a1)
    wait_until(lambda: a2 in receiver.holding(), what="a2 after a1 was answered")
    receiver.release(b1, a2)
    wait_until(lambda: _drained(sandbox, token), what="the webhook queue to drain")
    assert receiver.overlaps == []
    order = [receiver.next()[1]["update_id"] for _ in range(3)]
    assert order.index(a1) < order.index(a2)
    attempts = sandbox.calls(token, "webhook")
    assert sorted((c["update_id"], c["status"]) for c in attempts) == [
        (a1, 200), (a2, 200), (b1, 200)
    ]


def test_max_connections_bounds_the_deliveries_in_flight(
    sandbox: TelegramSandbox, receiver: Receiver
) -> None:
    token = make_token()
    receiver.gated = True
    sandbox.api(token, "setWebhook", url=receiver.url, max_connections=2)
    assert sandbox.api(token, "getWebhookInfo").json()["result"]["max_connections"] == 2
    sent = [sandbox.send("hi", user=_user(n), token=token)["update_id"] for n in range(1, 6)]
    wait_until(lambda: len(receiver.holding()) == 2, what="two deliveries in flight")
    delivered: set[int] = set()
    while delivered != set(sent):
        held = wait_until(receiver.holding, what="a delivery in flight")
        receiver.release(*held)
        delivered |= held
    wait_until(lambda: _drained(sandbox, token), what="the webhook queue to drain")
    assert receiver.most_in_flight == 2
    assert receiver.overlaps == []


def test_an_unreachable_webhook_is_retried_and_recorded(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.api(token, "setWebhook", url=f"http://127.0.0.1:{free_port()}/hook")
    sent = sandbox.send("anyone?", token=token)
    wait_until(lambda: len(sandbox.calls(token, "webhook")) >= 2, what="two failed attempts")
    attempts = sandbox.calls(token, "webhook")
    assert {(c["status"], c["update_id"]) for c in attempts} == {(0, sent["update_id"])}
    info = sandbox.api(token, "getWebhookInfo").json()["result"]
    assert info["pending_update_count"] == 1
    assert info["last_error_message"].startswith("Connection failed")
    sandbox.api(token, "deleteWebhook")
    assert sandbox.api(token, "getUpdates").json()["result"][0]["update_id"] == sent["update_id"]
