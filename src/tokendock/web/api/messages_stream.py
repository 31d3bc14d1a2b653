"""A streamed /v1/messages answer as Anthropic's named server-sent events:

    message_start (input tokens) · ping · per content block: content_block_start,
    content_block_delta (text_delta / input_json_delta) …, content_block_stop ·
    message_delta (stop_reason, usage) · message_stop

The pipeline's deltas become blocks: text opens (or continues) a text block, a tool call's first
piece opens a tool_use block and its argument pieces are its `input_json_delta`s. The usage in
`message_delta` is what the request was billed (known once the events have ended and the call
settled): all four counts, as Anthropic's stream sends them, so they replace `message_start`'s.
`message_start` counts the whole prompt as `input_tokens` with `cache_read_input_tokens` 0 —
how much of it the prefix cache held is known only once the engine has placed it; the SDK's
accumulated message takes `message_delta`'s (input_tokens then excludes the cached tokens).
A failure after the first byte is Anthropic's `event: error`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from tokendock.errors import InternalError, TokenDockError
from tokendock.inference.backend import JSON, Delta, Finish
from tokendock.protocol.messages import (
    PING,
    error_envelope,
    message_body,
    sse,
    stop_reason,
    text_block,
    tool_use_id,
    usage,
)
from tokendock.services.pipeline import Call
from tokendock.web.api.respond import Stamp

log = logging.getLogger(__name__)


def message_id(stamp: Stamp) -> str:
    """`msg_…` from the response's stamp (`msg-…`)."""
    return "msg_" + stamp.id.partition("-")[2]


class Blocks:
    """The content blocks of one streamed message, opened and closed as deltas arrive."""

    def __init__(self) -> None:
        self.count = 0  # blocks opened
        self.open: str | None = None  # the open block's type
        self.calls: dict[int, int] = {}  # a tool call's index → its block's index

    def delta(self, delta: Delta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if delta.text:
            if self.open != "text":
                out += self._start(text_block(""))
            out.append(_delta(self.count - 1, {"type": "text_delta", "text": delta.text}))
        for piece in delta.tool_calls or ():
            out += self._call(piece)
        return out

    def close(self) -> list[dict[str, Any]]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.count - 1}]

    def _start(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.close()
        out.append({"type": "content_block_start", "index": self.count, "content_block": block})
        self.open = block["type"]
        self.count += 1
        return out

    def _call(self, piece: JSON) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        fn = piece.get("function") or {}
        position = piece.get("index")
        if not isinstance(position, int):
            position = len(self.calls)
        if "id" in piece or position not in self.calls:
            call_id = tool_use_id(str(piece.get("id") or f"call_{self.count}"))
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id,
                "name": fn.get("name") or "",
                "input": {},
            }
            out += self._start(block)
            self.calls[position] = self.count - 1
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            index = self.calls[position]
            out.append(_delta(index, {"type": "input_json_delta", "partial_json": arguments}))
        return out


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


async def stream_events(call: Call, stamp: Stamp) -> AsyncIterator[bytes]:
    """The events of `call` (begun: its prompt is counted) in Anthropic's stream format."""
    msg_id = message_id(stamp)
    start = message_body(msg_id, stamp.model, [], None, call.prompt_tokens, 0)
    events = call.events()
    blocks = Blocks()
    reason = "end_turn"
    matched: str | None = None
    try:
        yield sse({"type": "message_start", "message": start})
        yield PING
        async for item in events:
            if isinstance(item, Delta):
                for body in blocks.delta(item):
                    yield sse(body)
            elif isinstance(item, Finish):
                reason = stop_reason(item.reason)
                matched = item.stop_sequence
                if matched is not None and reason == "end_turn":
                    reason = "stop_sequence"
                for body in blocks.close():
                    yield sse(body)
        tally = call.tally
        billed = (
            usage(tally.prompt_tokens, tally.completion_tokens, tally.cached_tokens)
            if tally
            else usage(0, 0)
        )
        yield sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": matched},
                "usage": billed,
            }
        )
        yield sse({"type": "message_stop"})
    except Exception as exc:
        yield failure_event(exc, msg_id)
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]


def failure_event(exc: Exception, stream_id: str) -> bytes:
    """The `error` event that ends a stream which failed after its first byte."""
    if isinstance(exc, TokenDockError) and not isinstance(exc, InternalError):
        return sse(error_envelope(exc))
    log.error("stream %s failed", stream_id, exc_info=exc)
    code = exc.code if isinstance(exc, TokenDockError) else None
    return sse(
        error_envelope(InternalError("The server had an error while generating.", code=code))
    )
