"""The upstream client's pure parts: SSE data framing, error events, error bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokendock.inference.upstream.client import UpstreamFailure, _error_of, _seconds, sse_events


class Lines:
    """Stands in for aiohttp's StreamReader: async iteration over raw lines."""

    def __init__(self, raw: bytes):
        self._lines = raw.splitlines(keepends=True)

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for line in self._lines:
                yield line

        return gen()


def collect(raw: bytes) -> list[dict[str, object]]:
    async def go() -> list[dict[str, object]]:
        return [d async for d in sse_events(Lines(raw), "dep")]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_data_lines_comments_crlf_and_multiline_events() -> None:
    raw = (
        b": ping\n\n"
        b'data: {"a":1}\r\n\r\n'
        b'event: message\nid: 7\ndata:{"b":\ndata: 2}\n\n'
        b'data: {"tail":true}'
    )
    assert collect(raw) == [{"a": 1}, {"b": 2}, {"tail": True}]


def test_stops_at_done() -> None:
    assert collect(b'data: {"choices":[]}\n\ndata: [DONE]\n\ndata: {"never":1}\n\n') == [
        {"choices": []}
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'data: {"error":{"message":"overloaded"}}\n\n', "overloaded"),
        (b"data: [1,2]\n\n", "not a JSON object"),
        (b"data: {nope\n\n", "stream broke"),
    ],
)
def test_error_events_and_garbage_are_upstream_failures(raw: bytes, message: str) -> None:
    with pytest.raises(UpstreamFailure, match=message):
        collect(raw)


def test_error_bodies_and_retry_after() -> None:
    assert _error_of(b'{"error":{"message":"m","code":"c"}}') == {"message": "m", "code": "c"}
    assert _error_of(b'{"error":"plain"}') == {"message": "plain"}
    assert _error_of(b'{"detail":"x"}') == {"detail": "x"}
    assert _error_of(b"<html>oops</html>") == {"message": "<html>oops</html>"}
    assert _seconds("3") == 3.0 and _seconds("0.5") == 0.5
    assert _seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None and _seconds(None) is None
