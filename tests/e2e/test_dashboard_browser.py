"""The dashboard in real headless Chromium (Debian's, driven by Playwright): sign up, create a
key, use it with the official SDK, see the usage and the lower balance, revoke it, get 401."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CATALOG = Path(__file__).with_name("priced_models.toml")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADMIN_PASSWORD = "operator password 42"

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "TOKENDOCK_MODELS_FILE": str(CATALOG),
        "TOKENDOCK_SIGNUP_GRANT": "1",
        "TOKENDOCK_KEY_CACHE_SECONDS": "0",
        "TOKENDOCK_BOOTSTRAP_PASSWORD": ADMIN_PASSWORD,
    }
    srv = start_server(tmp_path_factory.mktemp("dash-browser"), env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM, "chromium is missing: install Debian's chromium package"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_up(page: Page, site: Server, email: str) -> None:
    page.goto(site.base_url + "/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=False).first.fill("correct horse battery")
    page.get_by_label("Password again").fill("correct horse battery")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def balance(page: Page) -> float:
    return float(page.get_by_test_id("balance").inner_text())


def test_sign_up_make_a_key_use_it_see_usage_and_revoke(site: Server, page: Page) -> None:
    email = f"browser-{secrets.token_hex(4)}@example.com"
    page.goto(site.base_url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=False).first.fill("correct horse battery")
    page.get_by_label("Password again").fill("correct horse battery")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    assert balance(page) == 1.0
    expect(page.get_by_text("No requests yet")).to_be_visible()
    shot(page, "overview-empty")

    nav(page, "API keys")
    page.get_by_label("Name").fill("from the browser")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-secret").inner_text()
    assert secret.startswith("td-")
    shot(page, "keys-new")

    client = openai.OpenAI(base_url=site.v1, api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.usage is not None

    nav(page, "Overview")
    row = page.locator("tbody tr").first
    expect(row).to_contain_text(str(reply.usage.prompt_tokens))
    expect(row).to_contain_text(str(reply.usage.completion_tokens))
    assert balance(page) < 1.0
    shot(page, "overview")
    nav(page, "Usage")
    expect(page.get_by_test_id("total-requests")).to_have_text("1")
    spent = float(page.get_by_test_id("total-cost").inner_text())
    assert spent > 0 and abs((1.0 - spent) - balance_on_overview(page, site)) < 1e-9
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0].startswith("day,model,requests") and f",{MODEL},1," in rows[1]
    shot(page, "usage")
    nav(page, "Credits")
    expect(page.get_by_text("starting grant")).to_be_visible()
    shot(page, "credits")
    nav(page, "API")
    expect(page.locator("#base-url")).to_have_text(site.v1)
    shot(page, "api-reference")

    nav(page, "API keys")
    expect(page.locator("tbody tr").first).to_contain_text("from the browser")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("tbody tr").first).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Again."}], max_tokens=4
        )

    copied = page.context.cookies()  # the session cookie, as a thief would copy it
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(site.base_url + "/dashboard")
    expect(page).to_have_url(re.compile(r"/login$"))
    thief = page.context.browser.new_context()  # type: ignore[union-attr]
    thief.add_cookies(copied)  # type: ignore[arg-type]
    stolen = thief.new_page()
    stolen.goto(site.base_url + "/dashboard")
    expect(stolen).to_have_url(re.compile(r"/login$"))  # log-out ended it for everyone
    thief.close()


def balance_on_overview(page: Page, site: Server) -> float:
    """The balance the overview shows, read in a second tab."""
    other = page.context.new_page()
    other.goto(site.base_url + "/dashboard")
    value = balance(other)
    other.close()
    return value


def test_admin_grants_credits_and_the_user_sees_them(site: Server, browser: Browser) -> None:
    user_email = f"granted-{secrets.token_hex(4)}@example.com"
    user = browser.new_context().new_page()
    sign_up(user, site, user_email)
    expect(user).to_have_url(re.compile(r"/dashboard$"))
    before = balance(user)
    expect(user.get_by_role("link", name="Admin")).to_have_count(0)
    user.goto(site.base_url + "/admin")
    expect(user.get_by_role("heading", name="Administrators only")).to_be_visible()

    admin = browser.new_context().new_page()
    admin.goto(site.base_url + "/login")
    admin.get_by_label("Email").fill("admin@localhost")
    admin.get_by_label("Password").fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    nav(admin, "Admin")
    admin.get_by_label("Search by email").fill(user_email)
    admin.get_by_role("button", name="Search").click()
    row = admin.locator(f'tr[data-account="{user_email}"]')
    row.get_by_placeholder("credits").fill("2.5")
    row.get_by_placeholder("reason").fill("welcome bonus")
    row.get_by_role("button", name="Grant").click()
    expect(admin.get_by_role("status")).to_contain_text("2.500000 credits to " + user_email)
    shot(admin, "admin")

    user.goto(site.base_url + "/dashboard/credits")
    assert balance(user) == before + 2.5
    expect(user.get_by_text("welcome bonus (by admin@localhost)")).to_be_visible()


def test_playground_streams_an_answer_billed_like_any_request(site: Server, page: Page) -> None:
    sign_up(page, site, f"play-{secrets.token_hex(4)}@example.com")
    nav(page, "Playground")
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Your message").fill("Write a short poem about the sea.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("usage")).to_contain_text("completion tokens", timeout=60_000)
    answer = page.locator(".turn.assistant p").first
    assert answer.inner_text().strip()
    assert int(answer.get_attribute("data-chunks") or "0") >= 2  # it came in pieces
    usage_text = page.get_by_test_id("usage").inner_text()
    shot(page, "playground")
    nav(page, "Usage")
    expect(page.get_by_test_id("total-requests")).to_have_text("1")
    assert page.get_by_test_id("total-cost").inner_text() in usage_text
    nav(page, "API keys")
    expect(page.locator("tbody tr").first).to_contain_text("Playground")


def test_pages_fit_a_phone(site: Server, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(site.base_url + "/login")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    expect(page.get_by_label("Email")).to_be_visible()
    shot(page, "login-phone")
    context.close()


def shot(page: Page, name: str) -> None:
    """Screenshots of the main pages for docs/ (kept when TOKENDOCK_SCREENSHOTS is set)."""
    if os.environ.get("TOKENDOCK_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
