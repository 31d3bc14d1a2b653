"""The dashboard's API reference page (/dashboard/api), signed in over real HTTP: a copy-ready
example for each API (chat completions with a tool call, the Responses API, the Anthropic
Messages API, embeddings) in curl, the OpenAI Python and JavaScript SDKs and Anthropic's Python
SDK, with this server's base URL and a model of the right kind — and each one, copied as shown,
runs against the server. The README's examples follow the same conventions."""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.dashboard import Visitor
from tests.e2e.server import ROOT, Server, start_server
from tests.smoke.readme import README, README_BASE_URL

pytestmark = pytest.mark.any_database  # the reference page's examples, not the database

CHAT = "gemma-3-270m"
EMBEDDING = "all-minilm-l6-v2"  # the default catalog's `task = "embedding"` model
JS_DIR = ROOT / "tests" / "js"
SNIPPET = re.compile(r'<pre id="([\w-]+)"><code>(.*?)</code></pre>', re.S)
# id → what it must say (besides the base URL and its model)
EXPECTED = {
    "chat-curl": ["/v1/chat/completions", "Authorization: Bearer $TOKENDOCK_API_KEY"],
    "chat-python": ["from openai import OpenAI", "stream=True"],
    "chat-tools-python": ["tools=[weather]", 'tool_choice="required"', "tool_calls"],
    "chat-javascript": ['import OpenAI from "openai"', "chat.completions.create"],
    "responses-curl": ["/v1/responses", '"input": "Say hi."'],
    "responses-curl-stream": ["/v1/responses", '"stream": true'],
    "responses-python": ["client.responses.create(", "client.responses.stream("],
    "responses-javascript": ["client.responses.create(", "stream: true"],
    "messages-curl": ["/v1/messages", "x-api-key: $TOKENDOCK_API_KEY", "anthropic-version"],
    "messages-curl-bearer": ["/v1/messages", "Authorization: Bearer", "anthropic-version"],
    "messages-python": ["anthropic.Anthropic(", "client.messages.create(", ".text_stream"],
    "embeddings-curl": ["/v1/embeddings", '"input": ["a cat", "a dog"]'],
    "embeddings-python": ["client.embeddings.create("],
    "embeddings-javascript": ["client.embeddings.create("],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TOKENDOCK_SIGNUP_GRANT": "1", "TOKENDOCK_SIGNUPS_PER_HOUR_PER_ADDRESS": "0"}
    srv = start_server(tmp_path_factory.mktemp("reference"), env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(site: Server) -> tuple[dict[str, str], str]:
    """The page's snippets (id → text as copied) and a key of the signed-in account."""
    visitor = Visitor(site.base_url)
    assert visitor.signup(f"ref-{secrets.token_hex(4)}@example.com").status_code == 303
    response = visitor.get("/dashboard/api")
    assert response.status_code == 200
    assert "<script>" not in response.text and " on" + "click=" not in response.text  # CSP
    snippets = {i: html.unescape(code) for i, code in SNIPPET.findall(response.text)}
    return snippets, visitor.new_key("reference")


def test_each_api_has_its_examples_with_the_base_url_and_model(
    site: Server, page: tuple[dict[str, str], str]
) -> None:
    snippets, _ = page
    assert set(snippets) == set(EXPECTED)
    for name, needles in EXPECTED.items():
        code = snippets[name]
        for needle in needles:
            assert needle in code, (name, needle)
        base = site.base_url if name == "messages-python" else site.base_url + "/v1"
        assert f"{base}/" in code or f'"{base}"' in code, name  # Anthropic's SDK: the root
        model, other = (EMBEDDING, CHAT) if name.startswith("embeddings") else (CHAT, EMBEDDING)
        assert f'"{model}"' in code and other not in code, name
        assert "td-" not in code and "TOKENDOCK_API_KEY" in code, name  # never a key inline
    assert f'anthropic.Anthropic(base_url="{site.base_url}",' in snippets["messages-python"]


def run(argv: list[str], key: str, cwd: os.PathLike[str] | None = None) -> str:
    env = {**os.environ, "TOKENDOCK_API_KEY": key}
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[:2]} failed:\n{done.stderr}{done.stdout}"
    return done.stdout


# Run with a few tokens each: the examples ask for 40-64, minutes on a loaded 2-core machine.
LENGTH = re.compile(r"""(max_(?:output_)?tokens["']?\s*[:=]\s*)\d+""")


def test_the_examples_run_as_copied(page: tuple[dict[str, str], str]) -> None:
    snippets, key = page
    for name, shown in snippets.items():
        code = LENGTH.sub(r"\g<1>3", shown)
        if name.endswith("-python"):
            run([sys.executable, "-c", code], key)
        elif "-curl" in name:
            out = run(["bash", "-c", code.replace("curl ", "curl -fsS ", 1)], key)
            assert out.strip(), name
        else:
            node = shutil.which("node")
            assert node is not None and (JS_DIR / "node_modules" / "openai").exists()
            run([node, "--input-type=module", "-e", code], key, cwd=JS_DIR)


def test_the_readme_examples_follow_the_same_conventions(
    site: Server, page: tuple[dict[str, str], str]
) -> None:
    """What the README shows for each API is what the page shows (with the README's base)."""
    snippets, _ = page
    shown = "\n".join(snippets.values()).replace(site.base_url, README_BASE_URL)
    readme = README.read_text()
    for needle in (
        f'OpenAI(base_url="{README_BASE_URL}/v1"',
        f'anthropic.Anthropic(base_url="{README_BASE_URL}"',
        f"{README_BASE_URL}/v1/chat/completions",
        f"{README_BASE_URL}/v1/responses",
        f"{README_BASE_URL}/v1/messages",
        '-H "x-api-key: $TOKENDOCK_API_KEY"',
        '-H "anthropic-version: 2023-06-01"',
        "client.responses.create(",
        "client.responses.stream(",
        "client.messages.create(",
        "client.messages.stream(",
        "stream.text_stream",
        "client.messages.count_tokens(",
        f'client.embeddings.create(model="{EMBEDDING}"',
        'tool_choice="required"',
    ):
        assert needle in readme, f"README: {needle}"
        assert needle in shown, f"/dashboard/api: {needle}"
