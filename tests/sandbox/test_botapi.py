"""The Bot API endpoint: tokens, method names, parameter encodings, small methods."""

from __future__ import annotations

import json

from tests.fixtures.sandbox import TelegramSandbox, make_token


def test_get_me_reports_a_bot_with_a_username_derived_from_its_id(
    sandbox: TelegramSandbox,
) -> None:
    token = make_token(4242)
    response = sandbox.api(token, "getMe")
    assert response.status_code == 200
    me = response.json()["result"]
    assert me["id"] == 4242
    assert me["is_bot"] is True
    assert me["username"] == "sandbox4242_bot"
    assert me["can_join_groups"] is True
    assert me["first_name"]


def test_each_token_is_its_own_bot(sandbox: TelegramSandbox) -> None:
    first, second = make_token(11), make_token(22)
    sandbox.send("hello", token=first)
    assert sandbox.api(first, "sendMessage", chat_id=1001, text="hi").status_code == 200
    refused = sandbox.api(second, "sendMessage", chat_id=1001, text="hi")
    assert refused.status_code == 400
    assert refused.json()["description"] == "Bad Request: chat not found"
    assert {bot["id"] for bot in sandbox.bots()} == {11, 22}


def test_malformed_token_is_401(sandbox: TelegramSandbox) -> None:
    for token in ("123:short", "abc:" + "x" * 40, "12345"):
        response = sandbox.api(token, "getMe")
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_unknown_method_is_404_and_names_are_case_insensitive(sandbox: TelegramSandbox) -> None:
    token = make_token()
    response = sandbox.api(token, "sendTelepathy")
    assert response.status_code == 404
    assert response.json()["description"] == "Not Found"
    assert sandbox.api(token, "GETME").json()["ok"] is True
    assert sandbox.http.get(f"{sandbox.api_base}{token}/getme").json()["ok"] is True


def test_form_encoded_parameters_with_json_values_are_decoded(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    markup = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    response = sandbox.http.post(
        f"{sandbox.api_base}{token}/sendMessage",
        data={"chat_id": "1001", "text": "Sure?", "reply_markup": json.dumps(markup)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["reply_markup"] == markup


def test_query_string_and_multipart_parameters_work(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    by_query = sandbox.http.get(
        f"{sandbox.api_base}{token}/sendMessage", params={"chat_id": 1001, "text": "one"}
    )
    assert by_query.json()["result"]["text"] == "one"
    multipart = sandbox.http.post(
        f"{sandbox.api_base}{token}/sendMessage",
        files={"chat_id": (None, "1001"), "text": (None, "two")},
    )
    assert multipart.json()["result"]["text"] == "two"


def test_commands_are_stored_per_scope_and_language(sandbox: TelegramSandbox) -> None:
    token = make_token()
    commands = [
        {"command": "start", "description": "Start"},
        {"command": "code", "description": "Get a code"},
    ]
    assert sandbox.api(token, "setMyCommands", commands=commands).json()["result"] is True
    ru = [{"command": "start", "description": "Начать"}]
    assert sandbox.api(token, "setMyCommands", commands=ru, language_code="ru").status_code == 200
    assert sandbox.api(token, "getMyCommands").json()["result"] == commands
    assert sandbox.api(token, "getMyCommands", language_code="ru").json()["result"] == ru
    assert sandbox.api(token, "deleteMyCommands").json()["result"] is True
    assert sandbox.api(token, "getMyCommands").json()["result"] == []
    bad = sandbox.api(token, "setMyCommands", commands=[{"command": "Bad-Cmd", "description": "x"}])
    assert bad.status_code == 400


def test_close_log_out_and_chat_action(sandbox: TelegramSandbox) -> None:
    token = make_token()
    sandbox.send("hi", token=token)
    assert sandbox.api(token, "sendChatAction", chat_id=1001, action="typing").json()["result"]
    assert sandbox.api(token, "close").json() == {"ok": True, "result": True}
    assert sandbox.api(token, "logOut").json() == {"ok": True, "result": True}
