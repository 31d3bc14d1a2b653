from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.server import BACKENDS, Server, start_server

MODEL = "gemma-3-270m"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "any_database: what the module tests does not depend on the database (the engine, the "
        "wire formats, the SDKs): run against the SQLite server only, not again on PostgreSQL",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module marked `any_database` runs on the SQLite server only: its tests generate with
    the real model, and running them twice would test the engine twice, not the database.
    What does depend on the database (billing, usage, limits, stored objects, strings on
    PostgreSQL) is unmarked and runs on both."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("server") == "postgres"
        if on_postgres and item.get_closest_marker("any_database") is not None:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per database backend; the whole e2e suite runs against each."""
    srv = start_server(tmp_path_factory.mktemp(f"server-{request.param}"), backend=request.param)
    assert srv.key, srv.log()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=server.key, max_retries=0, timeout=120)


@pytest.fixture
def aclient(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.v1, api_key=server.key, max_retries=0, timeout=120)


@pytest.fixture
def auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}
