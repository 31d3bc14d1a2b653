"""Hand-written hostile requests (issue 9's findings, and what schemathesis found): each gets a
4xx or a 2xx in the OpenAI envelope with an x-request-id, never a 500, never a server path."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import ROOT, Server

pytestmark = pytest.mark.e2e

MODEL = "gemma-3-270m"
CHAT = '{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
TEXT = '{"model": "gemma-3-270m", "prompt": "hi", "max_tokens": 1'

# (method, path, raw body or None, expected status, the `param` a 400 names)
CASES = [
    ("POST", "/v1/chat/completions", CHAT + ', "logit_bias": {"²": 1}}', 400, "logit_bias"),
    ("POST", "/v1/chat/completions", CHAT + ', "logit_bias": {"٣": 1}}', 400, "logit_bias"),
    ("POST", "/v1/chat/completions", CHAT + ', "logit_bias": {"5": NaN}}', 400, "logit_bias.5"),
    ("GET", "/v1/usage?limit=abc", None, 400, "limit"),
    ("GET", "/v1/usage?limit=1e3", None, 400, "limit"),
    ("GET", "/v1/usage?limit=99999999999999999999999", None, 400, "limit"),
    ("GET", "/v1/usage?limit=%00", None, 400, "limit"),
    ("POST", "/v1/completions", TEXT + ', "temperature": NaN}', 400, "temperature"),
    ("POST", "/v1/completions", TEXT + ', "top_p": Infinity}', 400, "top_p"),
    ("POST", "/v1/completions", TEXT + ', "seed": 1e999}', 400, "seed"),
    ("POST", "/v1/completions", TEXT + ', "seed": 99999999999999999999999}', 400, "seed"),
    ("POST", "/v1/completions", TEXT + ', "n": 99999999999999999999999}', 400, "n"),
    (
        "POST",
        "/v1/completions",
        '{"model": "gemma-3-270m", "prompt": [[]], "max_tokens": 1}',
        400,
        None,
    ),
    ("POST", "/v1/completions", '{"model": "gemma-3-270m", "prompt": [[], [5]]}', 400, None),
    ("POST", "/v1/completions", "[" * 100_000 + "]" * 100_000, 400, None),
    # Past every parser's depth: refused before any walk can name the field.
    ("POST", "/v1/completions", '{"model": ' + "[" * 5000 + "]" * 5000 + "}", 400, None),
    ("POST", "/v1/chat/completions", '{"model": "\\ud800", "messages": []}', 400, "model"),
    ("GET", "/v1/models/%00%0A", None, 404, None),
    ("GET", "/v1/models/" + "x" * 5000, None, 404, None),
]


def check_envelope(response: httpx.Response) -> dict[str, object]:
    assert response.headers["x-request-id"].startswith("req_")
    assert str(ROOT) not in response.text and "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), CASES)
def test_a_hostile_request_is_refused_cleanly(
    server: Server,
    auth: dict[str, str],
    method: str,
    path: str,
    body: str | None,
    status: int,
    param: str | None,
) -> None:
    headers = {**auth, "content-type": "application/json"}
    content = body.encode() if body is not None else None
    response = httpx.request(
        method, server.base_url + path, headers=headers, content=content, timeout=60
    )
    assert response.status_code == status, response.text
    error = check_envelope(response)
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.parametrize("extra", ["NaN", "-Infinity", "1e999", "-1e999"])
def test_a_non_finite_number_in_an_ignored_field_is_not_a_500(
    server: Server, auth: dict[str, str], extra: str
) -> None:
    body = TEXT + f', "x_ignored": {extra}}}'
    response = httpx.post(server.v1 + "/completions", headers=auth, content=body, timeout=60)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        check_envelope(response)


def test_a_body_that_is_not_utf8_is_a_400(server: Server, auth: dict[str, str]) -> None:
    response = httpx.post(
        server.v1 + "/chat/completions", headers=auth, content=b'{"model": "\xff\xfe"}'
    )
    assert response.status_code == 400
    check_envelope(response)
