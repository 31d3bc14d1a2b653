from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tokendock.errors import ModelNotFound
from tokendock.web.middleware import RequestContextMiddleware, new_request_id

LIMIT = 1024
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
SECRET = "db password is hunter2"


async def ok(request: Request) -> Response:
    return PlainTextResponse(f"ok {request.state.request_id}")


async def crash(request: Request) -> Response:
    raise RuntimeError(SECRET)


async def not_found(request: Request) -> Response:
    raise ModelNotFound("ghost-model")


async def echo(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(str(len(body)))


async def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()

    return StreamingResponse(parts(), media_type="text/event-stream")


def build_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/ok", ok),
            Route("/crash", crash),
            Route("/not-found", not_found),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
        ],
        middleware=[Middleware(RequestContextMiddleware, max_body_bytes=LIMIT)],
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_envelope(
    response: httpx.Response, status: int, type_: str, code: str | None
) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["code"] == code
    assert int(response.headers["content-length"]) == len(response.content)
    return dict(error)


# --- request ids ------------------------------------------------------------------------------


def test_new_request_id_format() -> None:
    ids = {new_request_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(REQUEST_ID.match(i) for i in ids)


async def test_every_response_has_a_distinct_request_id(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/ok"),
        await client.get("/ok"),
        await client.get("/crash"),
        await client.get("/not-found"),
        await client.get("/stream"),
        await client.post("/echo", content=b"x" * (LIMIT + 1)),
        await client.get("/no-such-route"),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(REQUEST_ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert all(len(r.headers.get_list("x-request-id")) == 1 for r in responses)


async def test_request_id_is_exposed_to_the_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/ok")
    assert response.status_code == 200
    assert response.text == f"ok {response.headers['x-request-id']}"


# --- errors -----------------------------------------------------------------------------------


async def test_unhandled_exception_becomes_a_500_envelope(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokendock.web.middleware"):
        response = await client.get("/crash")
    error = assert_envelope(response, 500, "server_error", None)
    assert error["message"] == "The server had an internal error."
    assert error["param"] is None
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    # The details go to the server log instead, tagged with the request id.
    request_id = response.headers["x-request-id"]
    records = [r for r in caplog.records if request_id in r.getMessage()]
    assert records
    assert records[0].exc_info is not None
    assert "GET /crash" in records[0].getMessage()


async def test_tokendock_error_keeps_its_status_and_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/not-found")
    error = assert_envelope(response, 404, "invalid_request_error", "model_not_found")
    assert error["param"] == "model"
    assert "ghost-model" in error["message"]


async def test_successful_responses_pass_through(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * 10)
    assert response.status_code == 200
    assert response.text == "10"


async def test_streaming_response_passes_through_untouched(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/stream") as response:
        chunks = [chunk async for chunk in response.aiter_bytes()]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert REQUEST_ID.match(response.headers["x-request-id"])
    assert "content-length" not in response.headers
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


# --- body limit -------------------------------------------------------------------------------


async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.text == str(LIMIT)


async def test_body_over_the_limit_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * (LIMIT + 1))
    error = assert_envelope(response, 413, "invalid_request_error", "request_too_large")
    assert str(LIMIT) in error["message"]
    assert REQUEST_ID.match(response.headers["x-request-id"])


async def body_in_pieces(total: int, piece: int = 300) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        size = min(piece, total - sent)
        sent += size
        yield b"y" * size


async def test_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    request = client.build_request("POST", "/echo", content=body_in_pieces(5 * 300))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    error = assert_envelope(response, 413, "invalid_request_error", "request_too_large")
    assert str(LIMIT) in error["message"]
    assert REQUEST_ID.match(response.headers["x-request-id"])


async def test_streamed_body_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=body_in_pieces(LIMIT, piece=100))
    assert response.status_code == 200
    assert response.text == str(LIMIT)


# --- raw ASGI: cases an HTTP client cannot produce --------------------------------------------


async def drive(
    app: Any, *, headers: list[tuple[bytes, bytes]], body_parts: list[bytes], path: str = "/"
) -> list[Message]:
    """Run one HTTP request through `app`; return every message it sent."""
    incoming: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(body_parts) - 1}
        for i, part in enumerate(body_parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "query_string": b"",
    }
    await app(scope, receive, send)
    return sent


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = await read_all(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def start_of(sent: list[Message]) -> Message:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    return starts[0]


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_body_larger_than_its_declared_length_is_still_caught() -> None:
    app = RequestContextMiddleware(echo_app, max_body_bytes=LIMIT)
    sent = await drive(app, headers=[(b"content-length", b"10")], body_parts=[b"z" * 2000])
    assert start_of(sent)["status"] == 413
    assert orjson.loads(body_of(sent))["error"]["code"] == "request_too_large"


async def test_unparsable_content_length_falls_back_to_counting() -> None:
    app = RequestContextMiddleware(echo_app, max_body_bytes=LIMIT)
    small = await drive(app, headers=[(b"content-length", b"abc")], body_parts=[b"ok"])
    assert start_of(small)["status"] == 200
    assert body_of(small) == b"ok"
    big = await drive(app, headers=[(b"content-length", b"abc")], body_parts=[b"z" * 600] * 2)
    assert start_of(big)["status"] == 413


async def test_oversized_declared_body_never_reaches_the_app() -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    middleware = RequestContextMiddleware(app, max_body_bytes=LIMIT)
    sent = await drive(middleware, headers=[(b"content-length", b"1025")], body_parts=[b""])
    assert called is False
    assert start_of(sent)["status"] == 413
    headers = dict(start_of(sent)["headers"])
    assert REQUEST_ID.match(headers[b"x-request-id"].decode())


async def test_failure_after_the_response_started_sends_no_second_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError(SECRET)

    sent = await drive(
        RequestContextMiddleware(app, max_body_bytes=LIMIT), headers=[], body_parts=[b""]
    )
    assert start_of(sent)["status"] == 200
    assert body_of(sent) == b"partial"
    assert SECRET.encode() not in body_of(sent)


async def test_non_http_scopes_pass_through_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    middleware = RequestContextMiddleware(app, max_body_bytes=LIMIT)
    scope: dict[str, Any] = {"type": "lifespan"}

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing should be sent")

    await middleware(scope, receive, send)
    assert seen == [{"type": "lifespan"}]
    assert "state" not in scope
