"""The SSE wire format byte by byte, read from a raw socket (no SDK parsing in between)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database


def raw_post(
    base_url: str, path: str, body: dict[str, object], key: str, timeout: float = 60
) -> bytes:
    """HTTP/1.1 POST on a bare socket; returns the whole response, head and de-chunked body."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        rest = _dechunk(rest)
    return head_bytes + b"\r\n\r\n" + rest


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def split_events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n"), body[-50:]
    return body[:-2].split(b"\n\n")


def test_chat_stream_bytes(server: Server) -> None:
    raw = raw_post(
        server.base_url,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 6,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        server.key,
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/event-stream" in head.lower()
    assert re.search(rb"x-request-id: req_[0-9a-f]{32}\r\n", head + b"\r\n")
    assert b"content-length" not in head.lower()
    assert body.endswith(b"data: [DONE]\n\n")
    assert b"\nevent:" not in body and not body.startswith(b"event:")
    events = split_events(body)
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(c["usage"] is None for c in chunks[:-1])


def test_text_completion_stream_bytes(server: Server) -> None:
    raw = raw_post(
        server.base_url,
        "/v1/completions",
        {"model": MODEL, "prompt": "One, two,", "max_tokens": 4, "stream": True},
        server.key,
    )
    _, _, body = raw.partition(b"\r\n\r\n")
    events = split_events(body)
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


ONE_SLOT = Path(__file__).with_name("priced_models.toml")


@pytest.fixture(scope="module")
def pinging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One slot (priced_models.toml): a request waits behind another's generation.
    env = {"TOKENDOCK_KEEPALIVE_SECONDS": "0.2", "TOKENDOCK_MODELS_FILE": str(ONE_SLOT)}
    srv = start_server(tmp_path_factory.mktemp("ping"), env=env)
    yield srv
    srv.stop()


def test_keepalive_comments_while_queued(pinging_server: Server, tmp_path: Path) -> None:
    """A stream waiting behind a long generation gets `: ping` comments before its content."""
    import threading

    blocker = threading.Thread(
        target=raw_post,
        args=(
            pinging_server.base_url,
            "/v1/completions",
            {"model": MODEL, "prompt": "Tell a long tale:", "max_tokens": 120, "temperature": 0},
            pinging_server.key,
        ),
    )
    blocker.start()
    try:
        import time

        time.sleep(0.3)
        raw = raw_post(
            pinging_server.base_url,
            "/v1/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 3,
                "stream": True,
            },
            pinging_server.key,
        )
    finally:
        blocker.join(120)
    _, _, body = raw.partition(b"\r\n\r\n")
    events = split_events(body)
    assert b": ping" in events
    first_content = next(
        i for i, e in enumerate(events) if b'"content":"' in e and b'"role"' not in e
    )
    assert events.index(b": ping") < first_content
    assert events[-1] == b"data: [DONE]"
