"""web/errors.py: every exception becomes the OpenAI envelope, and none shows a server path."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from starlette.exceptions import HTTPException

from tokendock.errors import GenerationFailed
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.protocol.errors import from_validation_error
from tokendock.web import errors
from tokendock.web.middleware import RequestContextMiddleware

SERVER_PATH = __file__.rsplit("/", 2)[0]


def build_app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/usage")
    async def usage(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(503, detail=f"pool exhausted at {__file__}")

    @app.get("/engine")
    async def engine() -> None:
        raise GenerationFailed(f"Generation failed: decode returned -3 in {__file__}")

    @app.get("/crash")
    async def crash() -> None:
        raise KeyError(f"secret at {__file__}")

    @app.get("/deep")
    async def deep() -> None:
        recurse(0)

    app.add_middleware(RequestContextMiddleware, max_body_bytes=4096)
    return app


def recurse(n: int) -> int:
    """What a walk of an over-nested input does (a regex compiler, a schema's `$ref`s)."""
    return recurse(n + 1) + 1


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def error_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert SERVER_PATH not in response.text
    assert ".py" not in response.text
    return dict(body["error"])


@pytest.mark.parametrize("limit", ["abc", "1.5", "", "0", "1001", "²"])
async def test_a_bad_query_parameter_is_a_400_naming_it(
    client: httpx.AsyncClient, limit: str
) -> None:
    error = error_of(await client.get("/usage", params={"limit": limit}), 400)
    assert error["param"] == "limit"
    assert error["type"] == "invalid_request_error"
    assert "'limit'" in str(error["message"])


async def test_a_good_query_parameter_passes(client: httpx.AsyncClient) -> None:
    response = await client.get("/usage", params={"limit": "7"})
    assert response.json() == {"limit": 7}


async def test_a_server_http_error_says_nothing_of_its_detail(client: httpx.AsyncClient) -> None:
    error = error_of(await client.get("/teapot"), 503)
    assert error["message"] == "The server had an internal error."
    assert error["type"] == "server_error"


async def test_an_unhandled_exception_is_a_generic_500(client: httpx.AsyncClient) -> None:
    error = error_of(await client.get("/crash"), 500)
    assert error["message"] == "The server had an internal error."
    assert "secret" not in str(error)


async def test_an_internal_errors_own_text_goes_to_the_log_only(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokendock.web.errors"):
        response = await client.get("/engine")
    error = error_of(response, 500)
    assert error["message"] == "The server had an internal error."
    assert error["code"] == "generation_failed"
    assert "decode returned" not in response.text
    logged = [r.getMessage() for r in caplog.records]
    assert any("decode returned -3" in m and response.headers["x-request-id"] in m for m in logged)


@pytest.mark.parametrize("key", ["²", "٣", "1²", "-1", "1.0", "", " 1", "12345678901"])
def test_logit_bias_keys_are_ascii_token_ids(key: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "logit_bias": {key: 1},
    }
    with pytest.raises(Exception) as caught:  # noqa: PT011 — a pydantic ValidationError
        ChatCompletionRequest.model_validate(body, strict=True)
    err = from_validation_error(caught.value)  # type: ignore[arg-type]
    assert err.status == 400
    assert err.param == "logit_bias"


def test_logit_bias_takes_token_ids() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"42": 5}}
    req = ChatCompletionRequest.model_validate(body, strict=True)
    assert req.logit_bias_ids() == {42: 5.0}


def no_traceback_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    assert all(r.exc_info is None and r.stack_info is None for r in caplog.records)
    return [r.getMessage() for r in caplog.records]


async def test_a_recursion_error_is_a_400_and_one_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/deep")
    error = error_of(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "nested too deeply" in str(error["message"])
    logged = no_traceback_logged(caplog)
    lines = [m for m in logged if "RecursionError" in m]
    assert len(lines) == 1 and response.headers["x-request-id"] in lines[0]
    assert "test_web_errors.py" in lines[0]  # where it happened, for the operator
    assert sum(len(m) for m in logged) < 2_000  # not ~150 KB of frames


async def test_a_recursion_error_outside_fastapi_is_a_400_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hot_path(scope: Any, receive: Any, send: Any) -> None:  # like web/hot.py's routes
        recurse(0)

    app = RequestContextMiddleware(hot_path, max_body_bytes=4096)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        with caplog.at_level(logging.DEBUG):
            response = await c.post("/v1/messages", content=b"{}")
    assert response.status_code == 400
    assert response.json()["type"] == "error"  # Anthropic's envelope on its route
    assert "nested too deeply" in response.json()["error"]["message"]
    no_traceback_logged(caplog)
