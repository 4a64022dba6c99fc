"""The control interface: callbacks, long-polled reads, bots, faults, the default bot, reset."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.fixtures.sandbox import TelegramSandbox, make_token

ANN = {"id": 1001, "first_name": "Ann", "username": "ann", "language_code": "en"}
BOB = {"id": 2002, "first_name": "Bob", "language_code": "ru"}


def test_control_calls_need_a_bot_until_one_has_called_the_api(sandbox: TelegramSandbox) -> None:
    response = sandbox.post("/control/messages", {"text": "hi"})
    assert response.status_code == 409
    assert response.json()["error"] == "no_bot"
    token = make_token(777)
    sandbox.api(token, "getMe")
    sent = sandbox.send("hi")  # goes to the bot that last called the API
    assert sent["chat_id"] == 1001
    assert sandbox.api(token, "getUpdates").json()["result"][0]["message"]["text"] == "hi"


def test_tapping_a_button_queues_a_callback_query(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("/start", user=BOB, token=token)
    keyboard = {"inline_keyboard": [[{"text": "Approve", "callback_data": "ok:1"}]]}
    sent = sandbox.api(token, "sendMessage", chat_id=2002, text="Log in?", reply_markup=keyboard)
    message_id = sent.json()["result"]["message_id"]

    refused = sandbox.post("/control/callback", {
        "token": token, "chat_id": 2002, "message_id": message_id, "data": "nope",
    })
    assert refused.status_code == 400
    assert refused.json()["error"] == "no_such_button"

    tapped = sandbox.tap(2002, message_id, "ok:1", user=BOB, token=token)
    updates = sandbox.api(token, "getUpdates", offset=tapped["update_id"]).json()["result"]
    query = updates[0]["callback_query"]
    assert query["id"] == tapped["callback_query_id"]
    assert query["data"] == "ok:1"
    assert query["from"]["id"] == 2002
    assert query["message"]["message_id"] == message_id
    assert query["chat_instance"]

    assert sandbox.callback_answer(query["id"]) is None
    answered = sandbox.api(token, "answerCallbackQuery", callback_query_id=query["id"], text="Done")
    assert answered.json()["result"] is True
    answer = sandbox.callback_answer(query["id"])
    assert answer is not None
    assert (answer["text"], answer["show_alert"]) == ("Done", False)
    again = sandbox.api(token, "answerCallbackQuery", callback_query_id=query["id"])
    assert again.status_code == 400
    unknown = sandbox.api(token, "answerCallbackQuery", callback_query_id="123")
    assert unknown.json()["description"] == (
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    )


def test_messages_long_poll_waits_for_a_bot_message(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sent = sandbox.send("/start", user=ANN, token=token)
    assert sandbox.messages(1001, after=sent["message_id"], token=token) == []
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        # one long poll of 30 s (the longest); woken by the message, not by its deadline
        waiting = pool.submit(
            sandbox.wait_for_bot_message, 1001, sent["message_id"], 30, token
        )
        sandbox.api(token, "sendMessage", chat_id=1001, text="Hello, Ann")
        reply = waiting.result(timeout=40)
    assert time.monotonic() - started < 20
    assert reply["text"] == "Hello, Ann"
    assert reply["from_bot"] is True
    everything = sandbox.messages(1001, token=token)
    assert [m["from_bot"] for m in everything] == [False, True]


def test_wait_is_bounded(sandbox: TelegramSandbox) -> None:
    token = make_token()
    response = sandbox.get("/control/chats/1001/messages", token=token, wait=31)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_wait"


def test_bots_lists_counts_without_tokens(sandbox: TelegramSandbox) -> None:
    token = make_token(31337)
    sandbox.send("hi", token=token)
    sandbox.api(token, "sendMessage", chat_id=1001, text="a")
    sandbox.api(token, "sendMessage", chat_id=1001, text="b")
    sandbox.api(token, "getUpdates")
    (bot,) = sandbox.bots()
    assert bot["id"] == 31337
    assert bot["username"] == "sandbox31337_bot"
    assert bot["send_message_calls"] == 2
    assert bot["get_updates_calls"] == 1
    assert bot["pending_update_count"] == 1
    assert bot["webhook_url"] is None
    assert token not in str(sandbox.get("/control/bots").text)


def test_faults_fail_the_next_calls_and_other_methods_go_on(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    sandbox.fault("sendMessage", error_code=500, description="Internal Server Error",
                  count=2, token=token)
    for _ in range(2):
        response = sandbox.api(token, "sendMessage", chat_id=1001, text="x")
        assert response.status_code == 500
        assert response.json() == {
            "ok": False, "error_code": 500, "description": "Internal Server Error"
        }
    assert sandbox.api(token, "getMe").status_code == 200  # other methods are unaffected
    assert sandbox.api(token, "sendMessage", chat_id=1001, text="x").status_code == 200


def test_an_injected_429_answers_retry_after(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    sandbox.fault("sendMessage", retry_after=3, token=token)
    response = sandbox.api(token, "sendMessage", chat_id=1001, text="x")
    assert response.status_code == 429
    assert response.json() == {
        "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    assert sandbox.api(token, "getMe").status_code == 200


def test_reset_forgets_everything(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    sandbox.reset()
    assert sandbox.bots() == []
    refused = sandbox.api(token, "sendMessage", chat_id=1001, text="x")
    assert refused.json()["description"] == "Bad Request: chat not found"


def test_chat_page_and_its_assets_are_served(sandbox: TelegramSandbox) -> None:
    page = sandbox.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert 'data-testid="message-input"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert sandbox.get(asset).status_code == 200
