"""One parser policy on every route (issue 18, rows 6 and 8), against the real server on each
database: NaN / Infinity, nesting past 64 levels, and NUL or a lone surrogate in any string are
a 400 naming the field — never a 500, never a traceback in the log, never billed. Before,
/v1/responses and /v1/messages took NaN and Infinity (a 500 from the grammar), and a NUL in
`user` or `metadata.user_id` generated for free on PostgreSQL (the usage row failed, the hold
was swept)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

DEPTH = 64  # protocol/screen.MAX_DEPTH
MSGS = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"model": MODEL, "messages": MSGS, "max_tokens": 1}
RESPONSES: dict[str, Any] = {"model": MODEL, "input": "hi", "max_output_tokens": 16}
MESSAGES: dict[str, Any] = {"model": MODEL, "messages": MSGS, "max_tokens": 1}
TEXT: dict[str, Any] = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
TOOL = {"type": "object", "properties": {"x": {"type": "number", "minimum": "@"}}}


def with_tool(minimum: str, *, family: str) -> str:
    """A body whose tool schema has `minimum: <minimum>` (NaN / Infinity: not JSON, so spliced
    into the text)."""
    schema = json.dumps(TOOL).replace('"@"', minimum)
    if family == "chat":
        tools = f'[{{"type": "function", "function": {{"name": "f", "parameters": {schema}}}}}]'
        base = CHAT
    elif family == "responses":
        tools = f'[{{"type": "function", "name": "f", "parameters": {schema}}}]'
        base = RESPONSES
    else:
        tools = f'[{{"name": "f", "input_schema": {schema}}}]'
        base = MESSAGES
    return json.dumps(base)[:-1] + f', "tools": {tools}}}'


def deep(base: dict[str, Any], field: str, depth: int) -> str:
    """`base` with `field` nested so that the body is `depth` levels deep."""
    return json.dumps(base)[:-1] + f', "{field}": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def nul(base: dict[str, Any], **fields: Any) -> str:
    return json.dumps({**base, **fields})  # json.dumps writes "\x00" as the escape \u0000


# (route, raw body, the field the 400 names)
CASES: list[tuple[str, str, str | None]] = [
    ("/v1/chat/completions", nul(CHAT, user="a\x00b"), "user"),
    (
        "/v1/chat/completions",
        nul(CHAT, messages=[{"role": "user", "content": "x\x00"}]),
        "messages[0].content",
    ),
    ("/v1/chat/completions", json.dumps(CHAT)[:-1] + ', "temperature": NaN}', "temperature"),
    ("/v1/chat/completions", with_tool("NaN", family="chat"), "tools[0].function.parameters"),
    ("/v1/chat/completions", deep(CHAT, "x_extra", DEPTH + 1), "x_extra"),
    ("/v1/chat/completions", json.dumps(CHAT)[:-1] + ', "user": "\\udc00"}', "user"),
    ("/v1/completions", nul(TEXT, user="\x00"), "user"),
    ("/v1/responses", nul(RESPONSES, user="\x00"), "user"),
    ("/v1/responses", nul(RESPONSES, metadata={"k": "v\x00"}), "metadata.k"),
    ("/v1/responses", json.dumps(RESPONSES)[:-1] + ', "top_p": Infinity}', "top_p"),
    ("/v1/responses", with_tool("NaN", family="responses"), "tools[0].parameters"),
    ("/v1/responses", with_tool("-Infinity", family="responses"), "tools[0].parameters"),
    ("/v1/responses", with_tool("1e999", family="responses"), "tools[0].parameters"),
    ("/v1/responses", deep(RESPONSES, "metadata", DEPTH + 1), "metadata"),
    ("/v1/responses/input_tokens", nul(RESPONSES, input="\x00"), "input"),
    ("/v1/responses/input_tokens", with_tool("Infinity", family="responses"), "tools"),
    ("/v1/embeddings", nul({"model": MODEL, "input": ["ok", "\x00"]}), "input[1]"),
]
# Anthropic's envelope names no `param`: the message names the field.
MESSAGE_CASES: list[tuple[str, str, str]] = [
    ("/v1/messages", nul(MESSAGES, metadata={"user_id": "u\x00"}), "metadata.user_id"),
    ("/v1/messages", with_tool("NaN", family="messages"), "tools[0].input_schema"),
    ("/v1/messages", with_tool("Infinity", family="messages"), "tools[0].input_schema"),
    ("/v1/messages", deep(MESSAGES, "system", DEPTH + 1), "system"),
    ("/v1/messages", nul(MESSAGES, system="s\x00"), "system"),
    ("/v1/messages/count_tokens", with_tool("-Infinity", family="messages"), "tools[0]"),
]


@pytest.fixture(scope="module")
def account(server: Server) -> dict[str, str]:
    """An account of its own: nothing refused here may cost it anything."""
    key = server.new_key(f"policy-{secrets.token_hex(4)}@example.com", "10")
    return {"Authorization": f"Bearer {key}", "content-type": "application/json"}


def post(server: Server, headers: dict[str, str], path: str, body: str) -> httpx.Response:
    return httpx.post(server.base_url + path, headers=headers, content=body.encode(), timeout=120)


def balance(server: Server, headers: dict[str, str]) -> int:
    response = httpx.get(server.v1 + "/credits", headers=headers, timeout=30)
    return int(response.json()["balance_micro_credits"])


@pytest.mark.parametrize(("path", "body", "param"), CASES)
def test_a_body_against_the_policy_is_a_400_naming_the_field(
    server: Server, account: dict[str, str], path: str, body: str, param: str
) -> None:
    before = balance(server, account)
    response = post(server, account, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith(param), error
    assert f"'{param}" in error["message"]
    assert balance(server, account) == before


@pytest.mark.parametrize(("path", "body", "field"), MESSAGE_CASES)
def test_the_messages_api_refuses_them_in_its_own_envelope(
    server: Server, account: dict[str, str], path: str, body: str, field: str
) -> None:
    before = balance(server, account)
    response = post(server, account, path, body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert f"'{field}" in payload["error"]["message"], payload
    assert balance(server, account) == before


def test_nesting_up_to_the_bound_is_served(server: Server, account: dict[str, str]) -> None:
    response = post(server, account, "/v1/chat/completions", deep(CHAT, "x_extra", DEPTH))
    assert response.status_code == 200, response.text


def test_no_refusal_left_a_traceback_in_the_log(server: Server, account: dict[str, str]) -> None:
    start = len(server.log())  # the server is shared by the session: only this test's lines
    for path, body, _ in [*CASES, *MESSAGE_CASES]:
        assert post(server, account, path, body).status_code == 400
    log = server.log()[start:]
    assert "Traceback" not in log and "RecursionError" not in log
