"""The upstream client takes its HTTP session from outside: a router built on a transport that
wraps a test's own aiohttp session talks to an in-process aiohttp server (no process, no port
chosen by hand), and the pool never closes a session it was lent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tokendock.catalog import DeploymentSpec
from tokendock.inference.upstream.client import Deployment
from tokendock.inference.upstream.pool import UpstreamPool
from tokendock.inference.upstream.router import RetryPolicy, Router
from tokendock.inference.upstream.transport import UpstreamTransport

POLICY = RetryPolicy(retries=0, deadline=5, probe_every=0)


class Upstream:
    """An OpenAI-compatible upstream in this process: records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.seen.append((dict(request.headers), body))
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "hi"}}]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("a", "b"):
            chunk = {"choices": [{"delta": {"content": piece}}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, TestServer]]:
    fake = Upstream()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, server
    finally:
        await server.close()


def deployment(server: TestServer) -> Deployment:
    base = str(server.make_url("/v1"))
    return Deployment(DeploymentSpec(name="inproc", base_url=base, model="upstream-model"))


async def test_router_uses_the_session_it_was_given(
    upstream: tuple[Upstream, TestServer],
) -> None:
    fake, server = upstream
    async with aiohttp.ClientSession() as session:
        transport = UpstreamTransport(session)
        router = Router("public", [deployment(server)], POLICY, transport)
        pool = UpstreamPool({"public": router}, transport)
        await pool.start()
        assert transport.session is session

        answer = await router.open(
            "/chat/completions", {"messages": []}, stream=False, request_id="r1"
        )
        router.finish(answer)
        assert answer.body == {"choices": [{"message": {"content": "hi"}}]}

        answer = await router.open(
            "/chat/completions", {"stream": True}, stream=True, request_id="r2"
        )
        assert answer.first == {"choices": [{"delta": {"content": "a"}}]}
        assert answer.rest is not None
        rest = [event async for event in answer.rest]
        answer.close(reuse=True)
        router.finish(answer)
        assert rest == [{"choices": [{"delta": {"content": "b"}}]}]

        await pool.close()
        assert not session.closed  # lent by the test: the pool leaves it open

    headers, body = fake.seen[0]
    assert body["model"] == "upstream-model"  # the deployment's name for the model
    assert headers["x-tokendock-request-id"] == "r1"
    assert [b.get("stream") for _, b in fake.seen] == [None, True]


async def test_an_owned_transport_opens_at_start_and_closes_at_shutdown() -> None:
    transport = UpstreamTransport()
    with pytest.raises(RuntimeError, match="not started"):
        _ = transport.session
    await transport.start()
    session = transport.session
    assert not session.closed
    await transport.close()
    assert session.closed


def test_the_pool_refuses_routers_on_another_transport() -> None:
    dep = Deployment(DeploymentSpec(name="d", base_url="http://127.0.0.1:1/v1"))
    router = Router("m", [dep], POLICY, UpstreamTransport())
    with pytest.raises(ValueError, match="another transport"):
        UpstreamPool({"m": router}, UpstreamTransport())
