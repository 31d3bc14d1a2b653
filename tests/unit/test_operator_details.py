"""/ready and /metrics: the operator's details (upstream error text, engine state, metrics) only
on loopback or with the metrics token; beyond loopback without a token, /metrics is refused.

The app is built by the real `create_app` and driven in-process (no socket is opened, so the
`host` setting only decides what is shown). The catalog has one upstream model, which needs no
engine: the app is ready at once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tokendock.app import create_app
from tokendock.config import Settings
from tokendock.web.api.metrics import loopback_only

UPSTREAM_ERROR = "connect to 10.1.2.3:8443 refused (internal-llm.corp)"
TOKEN = "scrape-me-0123456789"
CATALOG = """
[models."up-model"]
engine = "upstream"
context_length = 2048
[models."up-model".price]
input = "1"
output = "1"
[[models."up-model".deployments]]
name = "gpu-a"
base_url = "http://127.0.0.1:9/v1"
"""

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    catalog = tmp_path / "models.toml"
    catalog.write_text(CATALOG)

    @asynccontextmanager
    async def make(host: str, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            host=host,
            metrics_token=token,
            models_file=catalog,
            data_dir=tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'td.db'}",
        )
        app = create_app(settings)
        router = app.state.services.models.upstreams.routers["up-model"]
        router.deployments[0].health.last_error = UPSTREAM_ERROR
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://td") as c:
            yield c

    return make


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
    ],
)
def test_loopback_only(host: str, loopback: bool) -> None:
    assert loopback_only(host) is loopback


async def test_loopback_shows_details_to_anyone(client: Client) -> None:
    async with client("127.0.0.1") as c:
        ready = await c.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["models"] == ["up-model"]
        assert ready.json()["upstreams"]["up-model"][0]["last_error"] == UPSTREAM_ERROR
        assert (await c.get("/metrics")).status_code == 200


async def test_beyond_loopback_without_the_token_only_ready_or_not(client: Client) -> None:
    async with client("0.0.0.0", TOKEN) as c:
        ready = await c.get("/ready", headers={"Authorization": "Bearer wrong"})
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}
        assert UPSTREAM_ERROR not in ready.text
        metrics = await c.get("/metrics")
        assert metrics.status_code == 401
        assert metrics.json()["error"]["code"] == "invalid_api_key"


async def test_beyond_loopback_the_token_shows_details(client: Client) -> None:
    async with client("0.0.0.0", TOKEN) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ready = await c.get("/ready", headers=auth)
        assert ready.json()["upstreams"]["up-model"][0]["last_error"] == UPSTREAM_ERROR
        metrics = await c.get("/metrics", headers=auth)
        assert metrics.status_code == 200
        assert "tokendock_requests_in_flight" in metrics.text


async def test_beyond_loopback_without_a_configured_token_metrics_are_off(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with client("0.0.0.0") as c:
            metrics = await c.get("/metrics")
            assert metrics.status_code == 401
            assert metrics.headers["x-request-id"].startswith("req_")
            assert "TOKENDOCK_METRICS_TOKEN" in metrics.json()["error"]["message"]
            assert (await c.get("/ready")).json() == {"status": "ready"}
    assert any("TOKENDOCK_METRICS_TOKEN" in r.getMessage() for r in caplog.records)


async def test_a_configured_token_is_needed_on_loopback_too(client: Client) -> None:
    async with client("127.0.0.1", TOKEN) as c:
        assert (await c.get("/metrics")).status_code == 401
        ready = await c.get("/ready")  # loopback: details for anyone
        assert "upstreams" in ready.json()
