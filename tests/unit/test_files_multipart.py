"""The streaming multipart reader (protocol/files.py): parts read back exactly whatever the
body's split into pieces, big parts handed on in bounded pieces, malformed bodies refused."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest

from tokendock.protocol.files import (
    CHUNK,
    MalformedBody,
    MultipartReader,
    boundary_of,
    filename_problem,
)


def form(data: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A body as httpx (under the openai SDK) encodes it, and its content type."""
    request = httpx.Request("POST", "http://x/", data=data, files=files)
    return request.read(), request.headers["content-type"]


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


async def read_all(
    body: bytes, content_type: str, size: int
) -> list[tuple[str, str | None, bytes, int]]:
    """(name, filename, bytes, largest piece) of each part."""
    boundary = boundary_of(content_type)
    assert boundary is not None
    reader = MultipartReader(pieces(body, size), boundary)
    out = []
    while (part := await reader.next_part()) is not None:
        got, largest = bytearray(), 0
        while piece := await reader.read():
            got += piece
            largest = max(largest, len(piece))
        out.append((part.name, part.filename, bytes(got), largest))
    return out


@pytest.mark.parametrize("size", [1, 7, 70, 4096, 10**7])
async def test_parts_read_back_exactly_however_the_body_is_split(size: int) -> None:
    payload = os.urandom(3000) + b"\r\n--" + os.urandom(500)  # a near-boundary inside
    body, content_type = form(
        {"purpose": "batch", "expires_after[seconds]": "3600"}, {"file": ("in.jsonl", payload)}
    )
    parts = await read_all(body, content_type, size)
    assert [(n, f, b) for n, f, b, _ in parts] == [
        ("purpose", None, b"batch"),
        ("expires_after[seconds]", None, b"3600"),
        ("file", "in.jsonl", payload),
    ]


async def test_a_large_part_is_handed_on_in_bounded_pieces() -> None:
    payload = os.urandom(5 * CHUNK + 123)
    body, content_type = form({}, {"file": ("big.bin", payload)})
    [(name, _, got, largest)] = await read_all(body, content_type, 65536)
    assert name == "file" and got == payload
    assert largest <= CHUNK


async def test_a_body_cut_short_is_malformed() -> None:
    body, content_type = form({"purpose": "batch"}, {"file": ("a.jsonl", b"x" * 10_000)})
    with pytest.raises(MalformedBody):
        await read_all(body[: len(body) // 2], content_type, 1000)


async def test_a_part_not_read_is_skipped() -> None:
    body, content_type = form({"a": "1", "b": "2"}, {"f": ("f.txt", b"")})
    boundary = boundary_of(content_type)
    assert boundary is not None
    reader = MultipartReader(pieces(body, 3), boundary)
    first = await reader.next_part()
    second = await reader.next_part()
    assert first is not None and second is not None and second.name == "b"
    assert await reader.field() == b"2"
    third = await reader.next_part()
    assert third is not None and third.filename == "f.txt"
    assert await reader.read() == b""
    assert await reader.next_part() is None


def test_boundaries_and_file_names() -> None:
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"
    assert boundary_of("multipart/form-data; boundary=xyz") == b"xyz"
    assert boundary_of("application/json") is None
    assert boundary_of("multipart/form-data") is None
    assert filename_problem("data.jsonl") is None
    assert filename_problem("données ✓.jsonl") is None
    assert filename_problem("a\x00b.jsonl") is not None
    assert filename_problem("") is not None
    assert filename_problem("x" * 513) is not None
    assert filename_problem("\ud800.jsonl") is not None
