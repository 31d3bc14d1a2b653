"""What bench/mock_upstream.py sends, as byte strings built once: HTTP responses and errors, the
chat completion and the SSE stream parts of each (model, token count), and the model list."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

try:
    import orjson

    dumps: Callable[[Any], bytes] = orjson.dumps
    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the bench's .venv has orjson

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads


CREATED = int(time.time())


class Config:
    def __init__(self, args: argparse.Namespace) -> None:
        self.delay = args.delay_ms / 1000.0
        lo, _, hi = args.interval_ms.partition("-")
        self.interval_lo = float(lo) / 1000.0
        self.interval_hi = float(hi or lo) / 1000.0
        self.chunks = args.chunks
        self.prompt_tokens = args.prompt_tokens
        self.models = [m.strip() for m in args.models.split(",") if m.strip()]


def http_response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def error_response(status: str, message: str, code: str) -> bytes:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return http_response(status, dumps(body))


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
STREAM_END = b"0\r\n\r\n"


def chunked(payload: bytes) -> bytes:
    """One HTTP chunk holding one or more SSE events."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


class Cache:
    """Every byte string the mock sends, per model and token count, built on first use."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.full: dict[tuple[str, int, bool], bytes] = {}
        self.stream: dict[tuple[str, int, bool, bool], tuple[bytes, bytes, bytes]] = {}
        self.models = http_response(
            "200 OK",
            dumps(
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": CREATED, "owned_by": "mock"}
                        for m in cfg.models
                    ],
                }
            ),
        )

    def usage(self, n: int) -> dict[str, int]:
        p = self.cfg.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}

    def completion(self, model: str, n: int, length: bool) -> bytes:
        key = (model, n, length)
        hit = self.full.get(key)
        if hit is None:
            body = {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "tok " * n},
                        "logprobs": None,
                        "finish_reason": "length" if length else "stop",
                    }
                ],
                "usage": self.usage(n),
            }
            hit = self.full[key] = http_response("200 OK", dumps(body))
        return hit

    def stream_parts(
        self, model: str, n: int, length: bool, usage: bool
    ) -> tuple[bytes, bytes, bytes]:
        """(head + role chunk, one content chunk, finish [+ usage] + [DONE] + end)."""
        key = (model, n, length, usage)
        hit = self.stream.get(key)
        if hit is None:
            base: dict[str, Any] = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
            }
            extra: dict[str, Any] = {"usage": None} if usage else {}

            def event(delta: dict[str, str], finish: str | None) -> bytes:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                return sse({**base, "choices": [choice], **extra})

            first = STREAM_HEAD + chunked(event({"role": "assistant", "content": ""}, None))
            content = chunked(event({"content": "tok "}, None))
            tail = event({}, "length" if length else "stop")
            if usage:
                tail += sse({**base, "choices": [], "usage": self.usage(n)})
            tail += b"data: [DONE]\n\n"
            hit = self.stream[key] = (first, content, chunked(tail) + STREAM_END)
        return hit
