"""Each usage row names the endpoint the request came in by, and the dashboard shows it: the
usage page's Endpoint column, the CSV's `endpoint` column and GET /v1/usage (SQLite and
PostgreSQL: the PostgreSQL settlement function writes it)."""

from __future__ import annotations

import csv
import io
import random
import re
import secrets

import openai

from tests.e2e.conftest import MODEL
from tests.e2e.dashboard import Visitor
from tests.e2e.server import Server

EMBEDDING_MODEL = "all-minilm-l6-v2"


def test_usage_shows_the_endpoint(server: Server) -> None:
    email = f"endpoints-{secrets.token_hex(4)}@example.com"
    # A loopback address of its own: other tests' sign-ups do not count against its hourly cap.
    visitor = Visitor(server.base_url, f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}")
    assert visitor.signup(email).status_code == 303
    server.cli("credits", "grant", email, "1", "--reference", f"endpoints-{email}")
    key = visitor.new_key("endpoints")
    client = openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=120)
    ask = [{"role": "user", "content": "Hi."}]
    client.chat.completions.create(model=MODEL, messages=ask, max_tokens=2)  # type: ignore[arg-type]
    client.chat.completions.create(model=MODEL, messages=ask, max_tokens=2)  # type: ignore[arg-type]
    list(client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, stream=True))
    client.embeddings.create(model=EMBEDDING_MODEL, input="Hi")

    rows = client.get("/usage", cast_to=object)["data"]  # type: ignore[index]
    assert sorted(r["endpoint"] for r in rows) == [
        "chat.completions",
        "chat.completions",
        "completions",
        "embeddings",
    ]

    page = visitor.get("/dashboard/usage").text
    assert '<th scope="col">Endpoint</th>' in page
    cells = re.findall(r'<td data-testid="usage-endpoint">([^<]*)</td>', page)
    assert sorted(cells) == ["chat.completions", "completions", "embeddings"]
    chat_row = re.search(
        r"<tr><td>[^<]*</td><td>([^<]*)</td><td[^>]*>chat\.completions</td>"
        r'<td class="num">(\d+)</td>',
        page,
    )
    assert chat_row is not None and chat_row.groups() == (MODEL, "2")

    table = list(csv.DictReader(io.StringIO(visitor.get("/dashboard/usage.csv").text)))
    by_endpoint = {(r["model"], r["endpoint"]): int(r["requests"]) for r in table}
    assert by_endpoint == {
        (MODEL, "chat.completions"): 2,
        (MODEL, "completions"): 1,
        (EMBEDDING_MODEL, "embeddings"): 1,
    }
