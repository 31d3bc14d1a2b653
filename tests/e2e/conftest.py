from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.server import BACKENDS, Server, start_server

MODEL = "gemma-3-270m"


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
