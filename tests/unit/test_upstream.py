"""The upstream client's pure parts: SSE data framing, error events, error bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokendock.inference.upstream import (
    UpstreamFailure,
    _error_of,
    _next_event,
    _seconds,
    sse_data,
)


class Lines:
    """Stands in for aiohttp's StreamReader: async iteration over raw lines."""

    def __init__(self, raw: bytes):
        self._lines = raw.splitlines(keepends=True)

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for line in self._lines:
                yield line

        return gen()


def collect(raw: bytes) -> list[bytes]:
    async def go() -> list[bytes]:
        return [d async for d in sse_data(Lines(raw))]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_data_lines_comments_crlf_and_multiline_events() -> None:
    raw = (
        b": ping\n\n"
        b'data: {"a":1}\r\n\r\n'
        b'event: message\nid: 7\ndata:{"b":\ndata: 2}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"tail":true}'
    )
    assert collect(raw) == [b'{"a":1}', b'{"b":\n2}', b"[DONE]", b'{"tail":true}']


def test_next_event_stops_at_done_and_raises_on_error_events() -> None:
    async def events(*items: bytes) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    async def go() -> None:
        stream = events(b'{"choices":[]}', b"[DONE]", b'{"never":1}')
        assert await _next_event(stream) == {"choices": []}
        assert await _next_event(stream) is None
        with pytest.raises(UpstreamFailure, match="overloaded"):
            await _next_event(events(b'{"error":{"message":"overloaded"}}'))
        with pytest.raises(ValueError, match="not a JSON object"):
            await _next_event(events(b"[1,2]"))

    asyncio.run(go())


def test_error_bodies_and_retry_after() -> None:
    assert _error_of(b'{"error":{"message":"m","code":"c"}}') == {"message": "m", "code": "c"}
    assert _error_of(b'{"error":"plain"}') == {"message": "plain"}
    assert _error_of(b'{"detail":"x"}') == {"detail": "x"}
    assert _error_of(b"<html>oops</html>") == {"message": "<html>oops</html>"}
    assert _seconds("3") == 3.0 and _seconds("0.5") == 0.5
    assert _seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None and _seconds(None) is None
