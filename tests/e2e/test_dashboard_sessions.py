"""Dashboard sessions end when they should, sign-up and log-in are throttled per client address
without locking anyone out, emails and passwords are bounded, the usage page is bounded, and the
API reference page never echoes the Host header — all through real HTTP against the real server,
on SQLite and PostgreSQL.

Visitors connect from different loopback addresses (127.0.0.0/8 is all loopback on Linux), so the
server sees them at different client addresses without trusting any forwarded header.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.dashboard import Visitor
from tests.e2e.server import BACKENDS, Server, start_server

ADMIN = "admin@localhost"
ADMIN_PASSWORD = "operator password 42"
PASSWORD = "correct horse battery"
SIGNUPS_PER_HOUR = 3
_addresses = (f"127.0.{i // 250 + 10}.{i % 250 + 2}" for i in itertools.count())


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "TOKENDOCK_SIGNUP_GRANT": "1",
        "TOKENDOCK_KEY_CACHE_SECONDS": "0",
        "TOKENDOCK_BOOTSTRAP_PASSWORD": ADMIN_PASSWORD,
        "TOKENDOCK_SIGNUPS_PER_HOUR_PER_ADDRESS": str(SIGNUPS_PER_HOUR),
    }
    path = tmp_path_factory.mktemp(f"sessions-{request.param}")
    srv = start_server(path, env, backend=request.param)
    yield srv
    srv.stop()


def address() -> str:
    """A loopback address no other test has used (each has its own sign-up allowance)."""
    return next(_addresses)


def email() -> str:
    return f"user-{secrets.token_hex(4)}@example.com"


def new_user(site: Server) -> tuple[Visitor, str]:
    visitor = Visitor(site.base_url, address())
    who = email()
    assert visitor.signup(who).status_code == 303
    return visitor, who


def is_dead(site: Server, stolen: Visitor) -> bool:
    """The copied session opens nothing: the dashboard sends it to log in, and the playground
    header with its CSRF token is a 401 in the OpenAI envelope."""
    page = stolen.http.get("/dashboard")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    api = stolen.http.post(
        "/v1/chat/completions", json=body, headers={"x-tokendock-csrf": stolen.csrf}
    )
    if page.status_code == 200 or api.status_code == 200:
        return False
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert api.status_code == 401 and api.headers["x-request-id"]
    error = api.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return True


def test_log_out_ends_the_session_a_copied_cookie_opens_nothing(site: Server) -> None:
    visitor, _ = new_user(site)
    stolen = visitor.copy(address())
    assert stolen.http.get("/dashboard").status_code == 200  # a live copy works...
    assert visitor.post("/logout", {}).headers["location"] == "/login"
    assert is_dead(site, stolen)  # ...and is worthless once its owner logs out
    assert is_dead(site, visitor)


def test_log_out_ends_only_that_session(site: Server) -> None:
    laptop, who = new_user(site)
    phone = Visitor(site.base_url, address())
    assert phone.login(who).status_code == 303
    laptop.post("/logout", {})
    assert phone.get("/dashboard").status_code == 200


def test_changing_the_password_ends_every_other_session(site: Server) -> None:
    laptop, who = new_user(site)
    phone = Visitor(site.base_url, address())
    assert phone.login(who).status_code == 303
    stolen = laptop.copy(address())
    laptop.get("/dashboard/password")
    new = "a brand new passphrase"
    wrong = laptop.post(
        "/dashboard/password", {"current": "not it at all", "password": new, "password2": new}
    )
    assert wrong.status_code == 400 and "current password is not right" in wrong.text
    assert phone.get("/dashboard").status_code == 200  # nothing changed yet
    done = laptop.post(
        "/dashboard/password", {"current": PASSWORD, "password": new, "password2": new}
    )
    assert (done.status_code, done.headers["location"]) == (303, "/dashboard/password?changed=1")
    assert "Password changed" in laptop.get("/dashboard/password?changed=1").text
    assert laptop.get("/dashboard").status_code == 200  # the browser that changed it stays in
    assert is_dead(site, stolen) and is_dead(site, phone)
    assert Visitor(site.base_url, address()).login(who).status_code == 401  # old password
    assert Visitor(site.base_url, address()).login(who, new).status_code == 303


def test_sign_out_everywhere_from_the_overview(site: Server) -> None:
    laptop, who = new_user(site)
    phone = Visitor(site.base_url, address())
    phone.login(who)
    page = laptop.get("/dashboard").text
    assert "Signed in on 2 browsers" in page and "Sign out everywhere" in page
    stolen = laptop.copy(address())
    assert laptop.post("/dashboard/sessions/end", {}).headers["location"] == "/login"
    assert is_dead(site, stolen) and is_dead(site, phone) and is_dead(site, laptop)
    assert Visitor(site.base_url, address()).login(who).status_code == 303


def account_id(admin: Visitor, who: str) -> str:
    page = admin.get(f"/admin?q={who}").text
    match = re.search(r'action="/admin/accounts/(\d+)/grant"', page)
    assert match, page[:2000]
    return match.group(1)


def test_admin_disable_and_sign_out_everywhere_end_sessions(site: Server) -> None:
    admin = Visitor(site.base_url, address())
    assert admin.login(ADMIN, ADMIN_PASSWORD).status_code == 303
    user, who = new_user(site)
    stolen = user.copy(address())
    target = account_id(admin, who)
    assert admin.post(f"/admin/accounts/{target}/disable", {}).status_code == 303
    admin.post(f"/admin/accounts/{target}/enable", {})
    assert is_dead(site, stolen)  # enabling the account again revives no session
    assert user.login(who).status_code == 303
    stolen = user.copy(address())
    admin.get("/admin")
    ended = admin.post(f"/admin/accounts/{target}/sessions/end", {})
    assert ended.status_code == 200 and "1 session(s) ended" in ended.text
    assert is_dead(site, stolen) and is_dead(site, user)
    assert admin.get("/admin").status_code == 200  # the admin's own session is untouched
    other, _ = new_user(site)
    other.get("/dashboard")
    assert other.post(f"/admin/accounts/{target}/sessions/end", {}).status_code == 403


def test_sign_up_is_throttled_per_client_address(site: Server) -> None:
    here, elsewhere = address(), address()
    for _ in range(SIGNUPS_PER_HOUR):
        assert Visitor(site.base_url, here).signup(email()).status_code == 303
    refused = Visitor(site.base_url, here).signup(email())
    assert refused.status_code == 429 and "Too many sign-ups from your address" in refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert Visitor(site.base_url, elsewhere).signup(email()).status_code == 303


def test_long_emails_and_passwords_are_refused_with_a_message(site: Server) -> None:
    visitor = Visitor(site.base_url, address())
    long_email = "a" * 390 + "@example.com"  # 402 characters: a 500 on PostgreSQL before
    for who, password, message in (
        (long_email, PASSWORD, "at most 254 characters"),
        ("b" * 5000 + "@example.com", PASSWORD, "at most 254 characters"),
        (email(), "x1y2z3" * 50, "at most 256 characters"),
    ):
        response = visitor.signup(who, password)
        assert response.status_code == 400, (len(who), len(password), response.status_code)
        assert message in response.text
    huge = visitor.login(email(), "p" * 60_000)  # refused before argon2 sees it
    assert huge.status_code == 401
    with pytest.raises(RuntimeError, match="at most 254 characters"):
        site.cli("accounts", "create", long_email)


def test_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(site: Server) -> None:
    _, who = new_user(site)
    attacker = Visitor(site.base_url, address())
    statuses = [attacker.login(who, f"guess number {i}").status_code for i in range(8)]
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429
    owner = Visitor(site.base_url, address())
    assert owner.login(who).status_code == 303
    # one address cannot spread its guesses over many accounts either
    spreader = Visitor(site.base_url, address())
    spread = [spreader.login(email(), "guess").status_code for _ in range(22)]
    assert spread.count(401) == 20 and spread[-1] == 429


def test_usage_page_is_bounded_and_never_a_500(site: Server) -> None:
    visitor, _ = new_user(site)
    for query, message in (
        ("from=1026-01-01&to=2025-12-31", "Dates are between"),
        ("from=2020-01-01&to=2025-12-31", "at most 366 days"),
        ("to=9999-12-31", "Dates are between"),
        ("to=0001-01-05", "Dates are between"),
        ("from=2025-13-45", "Dates are YYYY-MM-DD"),
    ):
        page = visitor.get(f"/dashboard/usage?{query}")
        assert page.status_code == 400 and message in page.text, (query, page.status_code)
        assert len(page.content) < 100_000 and page.text.count("<rect") <= 53
        csv = visitor.get(f"/dashboard/usage.csv?{query}")
        assert csv.status_code == 400 and message in csv.text, query
    year = visitor.get("/dashboard/usage?from=2025-01-01&to=2025-12-31")
    assert year.status_code == 200 and "Cost per week" in year.text
    assert year.text.count("<rect") == 53
    month = visitor.get("/dashboard/usage?from=2025-03-01&to=2025-03-31")
    assert month.text.count("<rect") == 31 and "Cost per day" in month.text


def test_api_reference_never_echoes_the_host_header(site: Server) -> None:
    visitor, _ = new_user(site)
    page = visitor.http.get("/dashboard/api", headers={"host": "evil.example"})
    assert page.status_code == 200
    assert "evil.example" not in page.text
    assert f"http://127.0.0.1:{site.port}/v1" in page.text


def test_a_form_larger_than_any_dashboard_form_is_refused(site: Server) -> None:
    visitor = Visitor(site.base_url, address())
    visitor.get("/login")
    body = b"csrf=" + visitor.csrf.encode() + b"&email=a%40b.c&password=" + b"x" * 200_000
    response = visitor.http.post(
        "/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 403
