"""The Batches, Files and Usage pages in real headless Chromium against a real `tokendock
serve` with the real model: a batch made with the official SDK and a key of the signed-in
account shows on the Batches page, progresses to completed and its output downloads from
there; a second, long batch is stopped with its Cancel button; the usage page shows what the
batches cost apart, the same as the Batches page's costs added up."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import orjson
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server
from tests.e2e.test_dashboard_browser import CATALOG, CHROMIUM, CHROMIUM_ARGS, nav, sign_up

pytestmark = pytest.mark.any_database  # the pages read through the same stores on both


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "TOKENDOCK_MODELS_FILE": str(CATALOG),
        "TOKENDOCK_SIGNUP_GRANT": "1",
        "TOKENDOCK_KEY_CACHE_SECONDS": "0",
        # Two lines in flight at most: a cancelled batch ends once they have (the catalog's
        # one slot runs them one at a time).
        "TOKENDOCK_BATCH_CONCURRENCY": "2",
    }
    srv = start_server(tmp_path_factory.mktemp("dash-batches"), env)
    yield srv
    srv.stop()


@pytest.fixture
def page() -> Iterator[Page]:
    assert CHROMIUM, "chromium is missing: install Debian's chromium package"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def batch_file(client: openai.OpenAI, prefix: str, count: int) -> str:
    lines = [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Say a word about the number {i}."}],
                "max_tokens": 4,
            },
        }
        for i in range(count)
    ]
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    return client.files.create(file=(f"{prefix}.jsonl", io.BytesIO(data)), purpose="batch").id


def test_batches_on_the_dashboard(site: Server, page: Page) -> None:
    sign_up(page, site, f"batches-{secrets.token_hex(4)}@example.com")
    nav(page, "API keys")
    page.get_by_label("Name").fill("batch jobs")
    page.get_by_role("button", name="Create key").click()
    client = openai.OpenAI(
        base_url=site.v1, api_key=page.get_by_test_id("new-secret").inner_text(), max_retries=0
    )

    small = client.batches.create(
        input_file_id=batch_file(client, "small", 2),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    nav(page, "Batches")
    row = page.locator(f'tr[data-batch-id="{small.id}"]')
    expect(row).to_be_visible()
    # The page reloads itself while the batch runs: its status moves on without a click.
    expect(row.get_by_test_id("batch-status")).to_have_text("completed", timeout=60_000)
    expect(row.get_by_test_id("batch-progress")).to_have_text("2/2")
    with page.expect_download() as download:
        row.get_by_role("link", name="Output").click()
    out = [orjson.loads(x) for x in Path(download.value.path()).read_bytes().splitlines()]
    assert sorted(x["custom_id"] for x in out) == ["small-0", "small-1"]
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert all(x["response"]["body"]["usage"]["completion_tokens"] <= 4 for x in out)

    big = client.batches.create(
        input_file_id=batch_file(client, "big", 300),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    page.goto(site.base_url + "/dashboard/batches")
    row = page.locator(f'tr[data-batch-id="{big.id}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Cancel").click()
    expect(row.get_by_test_id("batch-status")).to_have_text("cancelled", timeout=30_000)
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    done = client.batches.retrieve(big.id)
    assert done.status == "cancelled" and done.request_counts is not None
    assert done.request_counts.completed < 300 == done.request_counts.total
    shown = re.match(r"(\d+)/300", row.get_by_test_id("batch-progress").inner_text())
    assert shown and int(shown.group(1)) == 300  # every line ended: run, or cancelled

    costs = [Decimal(c) for c in page.get_by_test_id("batch-cost").all_inner_texts()]
    assert len(costs) == 2 and all(c > 0 for c in costs)
    nav(page, "Files")
    expect(page.locator(f'tr[data-file-id="{small.input_file_id}"]')).to_contain_text("small.jsonl")
    nav(page, "Usage")
    assert Decimal(page.get_by_test_id("batch-cost").inner_text()) == sum(costs)
    assert int(page.get_by_test_id("batch-requests").inner_text()) == 2 + (
        done.request_counts.completed
    )
