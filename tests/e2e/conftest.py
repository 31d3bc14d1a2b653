from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.server import Server, start_server

MODEL = "gemma-3-270m"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    # No key checks exist yet (issue 3); the SDK still requires one.
    return openai.OpenAI(base_url=server.v1, api_key="td-test", max_retries=0, timeout=120)


@pytest.fixture
def aclient(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.v1, api_key="td-test", max_retries=0, timeout=120)
