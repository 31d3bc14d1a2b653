"""Dashboard security through real HTTP: CSRF, cookie flags, throttled log-in, no account
enumeration, tampered sessions, and another account's keys never reachable."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.dashboard import Visitor
from tests.e2e.server import BACKENDS, Server, start_server


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "TOKENDOCK_SIGNUP_GRANT": "1",
        "TOKENDOCK_KEY_CACHE_SECONDS": "0",
        "TOKENDOCK_BOOTSTRAP_PASSWORD": ADMIN_PASSWORD,
        "TOKENDOCK_SIGNUPS_PER_HOUR_PER_ADDRESS": "0",  # every visitor here is 127.0.0.1
    }
    srv = start_server(tmp_path_factory.mktemp(f"dash-{request.param}"), env, backend=request.param)
    yield srv
    srv.stop()


ADMIN_PASSWORD = "operator password 42"


def email() -> str:
    return f"user-{secrets.token_hex(4)}@example.com"


def test_forms_without_the_csrf_token_are_refused(site: Server) -> None:
    visitor = Visitor(site.base_url)
    visitor.get("/signup")
    who = email()
    data = {"email": who, "password": "correct horse battery", "password2": "correct horse battery"}
    assert visitor.post("/signup", data, csrf=False).status_code == 403
    visitor.csrf = "forged-token"
    assert visitor.post("/signup", data).status_code == 403
    assert visitor.signup(who).status_code == 303  # with its token it works
    assert visitor.post("/dashboard/keys", {"name": "x"}, csrf=False).status_code == 403
    assert visitor.post("/logout", {}, csrf=False).status_code == 403


def test_session_cookie_flags(site: Server) -> None:
    visitor = Visitor(site.base_url)
    response = visitor.signup(email())
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("td_session=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags
    assert "secure" not in flags  # plain http on 127.0.0.1; https base URLs get Secure
    page = visitor.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_tampered_or_foreign_cookie_is_anonymous(site: Server) -> None:
    visitor = Visitor(site.base_url)
    visitor.signup(email())
    token = visitor.http.cookies["td_session"]
    payload, _, mac = token.partition(".")
    visitor.http.cookies.set("td_session", payload[:-2] + "AA." + mac)
    assert visitor.get("/dashboard").headers["location"] == "/login"
    visitor.http.cookies.set("td_session", "garbage")
    assert visitor.get("/dashboard").headers["location"] == "/login"


def test_wrong_passwords_are_throttled_and_never_tell_which_part_was_wrong(site: Server) -> None:
    who = email()
    Visitor(site.base_url).signup(who)
    visitor = Visitor(site.base_url)
    unknown = visitor.login(email(), "whatever-password")
    wrong = visitor.login(who, "wrong-password-1")
    assert unknown.status_code == wrong.status_code == 401
    message = re.compile(r'role="alert">([^<]+)<')
    assert message.search(unknown.text).group(1) == message.search(wrong.text).group(1)  # type: ignore[union-attr]
    statuses = [visitor.login(who, f"wrong-password-{i}").status_code for i in range(10)]
    assert 429 in statuses and statuses[-1] == 429
    throttled = visitor.login(who, "correct horse battery")
    assert throttled.status_code == 429 and "retry-after" in throttled.headers


def test_another_accounts_keys_can_never_be_revoked(site: Server) -> None:
    alice, mallory = Visitor(site.base_url), Visitor(site.base_url)
    alice.signup(email())
    mallory.signup(email())
    secret = alice.new_key("alice's")
    page = alice.get("/dashboard/keys").text
    key_id = re.search(r'data-key-id="(\d+)"', page).group(1)  # type: ignore[union-attr]
    for target in (key_id, "0", "999999", "-1"):
        response = mallory.post(f"/dashboard/keys/{target}/revoke", {})
        assert response.status_code in (404, 422), (target, response.status_code)
    assert secret[-4:] not in mallory.get("/dashboard/keys").text
    client = openai.OpenAI(base_url=site.v1, api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices  # alice's key still works
    # mallory's pages show only mallory's usage
    assert alice.get("/dashboard").text.count("<tr>") > mallory.get("/dashboard").text.count("<tr>")


def test_pages_need_a_session(site: Server) -> None:
    visitor = Visitor(site.base_url)
    for path in ("/dashboard", "/dashboard/keys", "/dashboard/credits"):
        response = visitor.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert visitor.post("/dashboard/keys/1/revoke", {}).headers["location"] == "/login"


def test_admin_pages_and_actions_are_refused_to_non_admins(site: Server) -> None:
    visitor = Visitor(site.base_url)
    visitor.signup(email())
    assert visitor.get("/admin").status_code == 403
    for path, data in (
        ("/admin/accounts/1/grant", {"amount": "100", "reason": "me"}),
        ("/admin/accounts/1/disable", {}),
        ("/admin/codes", {"amount": "5", "count": "3"}),
    ):
        assert visitor.post(path, data).status_code == 403, path
    anonymous = Visitor(site.base_url)
    assert anonymous.get("/admin").headers["location"] == "/login"


def test_usage_of_another_accounts_key_is_never_shown(site: Server) -> None:
    alice, mallory = Visitor(site.base_url), Visitor(site.base_url)
    alice.signup(email())
    mallory.signup(email())
    secret = alice.new_key("alice's")
    openai.OpenAI(base_url=site.v1, api_key=secret, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    key_id = re.search(r'data-key-id="(\d+)"', alice.get("/dashboard/keys").text).group(1)  # type: ignore[union-attr]
    assert 'data-testid="total-requests">1<' in alice.get(f"/dashboard/usage?key={key_id}").text
    page = mallory.get(f"/dashboard/usage?key={key_id}").text
    assert 'data-testid="total-requests">0<' in page
    csv_text = mallory.get(f"/dashboard/usage.csv?key={key_id}").text
    assert csv_text.strip().splitlines() == [
        "day,model,requests,prompt_tokens,completion_tokens,cost_credits,endpoint,cached_tokens"
    ]


def test_playground_path_needs_the_session_and_its_token(site: Server) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    visitor = Visitor(site.base_url)
    visitor.signup(email())
    api = visitor.http
    # no token, a wrong token, or no session: 401 in the OpenAI envelope
    assert api.post("/v1/chat/completions", json=body).status_code == 401
    wrong = api.post("/v1/chat/completions", json=body, headers={"x-tokendock-csrf": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "invalid_request_error"
    stranger = Visitor(site.base_url).http
    stranger.get("/login")
    anonymous = stranger.post(
        "/v1/chat/completions", json=body, headers={"x-tokendock-csrf": visitor.csrf}
    )
    assert anonymous.status_code == 401
    ok = api.post("/v1/chat/completions", json=body, headers={"x-tokendock-csrf": visitor.csrf})
    assert ok.status_code == 200 and ok.headers["x-tokendock-cost"]
    assert "Playground" in visitor.get("/dashboard/keys").text


def test_operators_can_close_sign_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = start_server(tmp_path_factory.mktemp("closed"), {"TOKENDOCK_SIGNUP_OPEN": "false"})
    try:
        visitor = Visitor(srv.base_url)
        assert "Sign-up is closed" in visitor.get("/signup").text
        assert "Create an account" not in visitor.get("/login").text
        refused = visitor.signup(email())
        assert refused.status_code == 403 and "td_session=" not in refused.headers.get(
            "location", ""
        )
        assert visitor.get("/dashboard").headers["location"] == "/login"
    finally:
        srv.stop()


def test_admin_switches_a_model_off_and_reprices_it(site: Server) -> None:
    admin = Visitor(site.base_url)
    assert admin.login("admin@localhost", ADMIN_PASSWORD).status_code == 303
    user = Visitor(site.base_url)
    user.signup(email())
    client = openai.OpenAI(base_url=site.v1, api_key=user.new_key(), max_retries=0)
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    path = f"/admin/models/{MODEL}"
    admin.get("/admin")
    try:
        off = admin.post(path, {"input": "0.05", "output": "0.10"})  # no "enabled": off
        assert off.status_code == 200 and "switched off" in off.text
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert caught.value.code == "model_not_found"
        assert MODEL not in [m.id for m in client.models.list()]
        assert admin.post(path, {"enabled": "on", "input": "2", "output": "x"}).status_code == 400
        admin.post(path, {"enabled": "on", "input": "2", "output": "4"})
        raw = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
        usage = raw.parse().usage
        expected = usage.prompt_tokens * 2 + usage.completion_tokens * 4  # µc: 2 and 4 per token
        assert raw.headers["x-tokendock-cost"] == f"{expected / 1e6:.6f}"
    finally:
        admin.post(path, {"enabled": "on", "input": "0.05", "output": "0.10"})
    assert MODEL in [m.id for m in client.models.list()]


def test_nul_in_forms_and_queries_never_reaches_the_database(site: Server) -> None:
    """PostgreSQL refuses a NUL in text: a form field or a query parameter holding one is
    cleaned or refused, never a 500 (the same on SQLite)."""
    visitor = Visitor(site.base_url)
    visitor.get("/signup")
    assert visitor.signup(f"nul\x00{email()}").status_code in (303, 400)
    visitor = Visitor(site.base_url)
    assert visitor.signup(email()).status_code == 303
    secret = visitor.new_key("with\x00nul")
    assert secret.startswith("td-")
    assert "withnul" in visitor.get("/dashboard/keys").text
    for path in (
        "/dashboard/usage?key=1%00",
        "/dashboard/usage?model=x%00y",
        "/dashboard/usage.csv?model=%00",
        "/dashboard/usage?day=2026-01-01%00",
    ):
        assert visitor.get(path).status_code < 500, path
    client = openai.OpenAI(base_url=site.v1, api_key=secret, max_retries=0)
    for call in (
        lambda: client.chat.completions.list(model="x\x00y"),
        lambda: client.chat.completions.list(metadata={"k\x00": "v\x00"}),
        lambda: client.chat.completions.list(after="chatcmpl-\x00"),
    ):
        status = 200
        try:
            call()
        except openai.APIStatusError as exc:
            status = exc.status_code
        assert status < 500
