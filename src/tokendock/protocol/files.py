"""The Files and Uploads APIs on the wire (OpenAI's shapes): the purposes a client may name, the
`FileObject`, `Upload` and `UploadPart` objects, and a streaming `multipart/form-data` reader.

The reader never holds a part in memory: `MultipartReader.next_part()` reads a part's headers,
`read()` then hands its body on in pieces as the request body arrives (at most about CHUNK
bytes each), so an upload of hundreds of MB costs the server a few MB of memory. A body that
ends before its closing boundary, or whose part headers are not what a form sends, is a
`MalformedBody` (the caller answers 400 and keeps nothing).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

# What a client may upload for; `batch_output` is only ever written by the server.
CLIENT_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
SERVER_PURPOSES = ("batch_output",)
EXPIRES_MIN, EXPIRES_MAX = 3600, 2_592_000  # `expires_after[seconds]` (1 hour … 30 days)
MAX_FILENAME_CHARS = 512  # the `filename` column
MAX_MIME_CHARS = 128  # the `mime_type` column
MAX_LIST = 10_000  # GET /v1/files `limit` (OpenAI's bound and default)

CHUNK = 256 * 1024  # the most a `read()` returns at once
MAX_HEADER_BYTES = 16 * 1024  # a part's headers
MAX_FIELD_BYTES = 4096  # a text field (`purpose`, `expires_after[seconds]`, …)


class FileLike(Protocol):
    """What a file's object is made of (storage/files.py: FileRow)."""

    @property
    def id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...


def _unix(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp())


def file_object(row: FileLike) -> dict[str, Any]:
    """OpenAI's `FileObject`; a file is only ever shown once `processed`."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": _unix(row.created_at),
        "expires_at": _unix(row.expires_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
    }


def file_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}


@dataclass(frozen=True, slots=True)
class UploadView:
    id: str
    purpose: str
    filename: str
    bytes: int
    status: str  # pending, completed, cancelled, expired
    created_at: datetime
    expires_at: datetime


def upload_object(upload: UploadView, file: FileLike | None = None) -> dict[str, Any]:
    """OpenAI's `Upload`: `file` is the file a completed upload made, else null."""
    return {
        "id": upload.id,
        "object": "upload",
        "bytes": upload.bytes,
        "created_at": _unix(upload.created_at),
        "expires_at": _unix(upload.expires_at),
        "filename": upload.filename,
        "purpose": upload.purpose,
        "status": upload.status,
        "file": None if file is None else file_object(file),
    }


def part_object(part_id: str, upload_id: str, created_at: datetime) -> dict[str, Any]:
    return {
        "id": part_id,
        "object": "upload.part",
        "created_at": _unix(created_at),
        "upload_id": upload_id,
    }


class UploadCreateRequest(BaseModel):
    """POST /v1/uploads."""

    model_config = ConfigDict(strict=True, extra="ignore")

    filename: str = Field(max_length=4 * MAX_FILENAME_CHARS)
    purpose: str = Field(max_length=64)
    bytes: int
    mime_type: str = Field(max_length=MAX_MIME_CHARS)


class UploadCompleteRequest(BaseModel):
    """POST /v1/uploads/{upload_id}/complete: the parts in order, and their MD5 if given."""

    model_config = ConfigDict(strict=True, extra="ignore")

    part_ids: list[str] = Field(max_length=MAX_LIST)
    md5: str | None = Field(default=None, max_length=64)


def filename_problem(name: str) -> str | None:
    """Why a client's file name cannot be kept (None: it can): empty, too long, a NUL or a
    control character, or a lone surrogate (PostgreSQL text holds none of them)."""
    if not name:
        return "the file name is empty"
    if len(name) > MAX_FILENAME_CHARS:
        return f"the file name is longer than {MAX_FILENAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the file name contains a NUL or control character"
    try:
        name.encode()
    except UnicodeEncodeError:
        return "the file name is not valid Unicode"
    return None


# -- multipart/form-data, streamed ------------------------------------------------------------


class MalformedBody(Exception):
    """The body is not the multipart form it says it is (or it ended early)."""


BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,70})"|([^\s;,"]{1,70}))', re.IGNORECASE)


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` content type; None for any other type."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        return None
    found = BOUNDARY.search(content_type)
    if found is None:
        return None
    return (found.group(1) or found.group(2)).encode("latin-1")


@dataclass(frozen=True, slots=True)
class PartHeaders:
    name: str
    filename: str | None  # None: a plain field, not a file
    content_type: str | None


PARAM = re.compile(r';\s*([a-zA-Z*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def _disposition(value: str) -> tuple[str, str | None]:
    """`form-data; name="…"; filename="…"` → (name, filename); RFC 7578 says no
    `filename*`, but browsers' percent-encoded `filename*=utf-8''…` is taken too."""
    if not value.lower().startswith("form-data"):
        raise MalformedBody("a part's Content-Disposition is not form-data")
    params: dict[str, str] = {}
    for key, quoted, bare in PARAM.findall(value):
        text = quoted if quoted or not bare else bare
        params[key.lower()] = re.sub(r"\\(.)", r"\1", text) if quoted else text
    if "name" not in params:
        raise MalformedBody("a part has no name")
    filename = params.get("filename")
    starred = params.get("filename*")
    if starred and "''" in starred:
        filename = unquote(starred.split("''", 1)[1], errors="strict")
    return params["name"], filename


def _headers(raw: bytes) -> PartHeaders:
    text = raw.decode("utf-8", "surrogateescape")
    fields: dict[str, str] = {}
    for line in text.split("\r\n"):
        if ":" not in line:
            raise MalformedBody("a part header has no colon")
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    disposition = fields.get("content-disposition")
    if disposition is None:
        raise MalformedBody("a part has no Content-Disposition")
    name, filename = _disposition(disposition)
    return PartHeaders(name, filename, fields.get("content-type"))


class MultipartReader:
    """Parts of a multipart body, in order: `next_part()` (None after the last), then
    `read()` repeatedly (b"" at the part's end). A part not read to its end is skipped."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes):
        self._body = body.__aiter__()
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")  # the first boundary has no CRLF before it
        self._in_part = False
        self._done = False
        self._ended = False  # the body itself ran out

    async def _more(self) -> bool:
        while not self._ended:
            try:
                piece = await anext(self._body)
            except StopAsyncIteration:
                self._ended = True
                return False
            if piece:
                self._buffer += piece
                return True
        return False

    async def _need(self, n: int) -> None:
        while len(self._buffer) < n:
            if not await self._more():
                raise MalformedBody("the body ended before the closing boundary")

    async def next_part(self) -> PartHeaders | None:
        while self._in_part:
            await self.read()
        if self._done:
            return None
        await self._seek_delimiter()
        await self._need(len(self._delimiter) + 2)
        after = len(self._delimiter)
        mark = bytes(self._buffer[after : after + 2])
        if mark == b"--":
            self._done = True
            return None
        end = self._buffer.find(b"\r\n\r\n", after)
        while end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MalformedBody("a part's headers are too long")
            if not await self._more():
                raise MalformedBody("the body ended inside a part's headers")
            end = self._buffer.find(b"\r\n\r\n", after)
        line_end = self._buffer.find(b"\r\n", after)
        raw = bytes(self._buffer[line_end + 2 : end])
        del self._buffer[: end + 4]
        self._in_part = True
        return _headers(raw)

    async def _seek_delimiter(self) -> None:
        """Drop anything before the next delimiter (the preamble)."""
        while (at := self._buffer.find(self._delimiter)) < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                del self._buffer[: len(self._buffer) - keep]
            if not await self._more():
                raise MalformedBody("no multipart boundary in the body")
        del self._buffer[:at]

    async def read(self) -> bytes:
        """The next piece of the current part's body; b"" once it has ended."""
        if not self._in_part:
            return b""
        keep = len(self._delimiter) - 1
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                return self._take(min(at, CHUNK), ending=at <= CHUNK)
            if len(self._buffer) - keep >= CHUNK:
                return self._take(min(len(self._buffer) - keep, CHUNK), ending=False)
            if not await self._more():
                raise MalformedBody("the body ended inside a part")

    def _take(self, n: int, *, ending: bool) -> bytes:
        piece = bytes(self._buffer[:n])
        del self._buffer[:n]
        if ending:
            self._in_part = False
        return piece

    async def field(self) -> bytes:
        """The whole of the current part, for a text field (bounded: MalformedBody past
        MAX_FIELD_BYTES)."""
        out = bytearray()
        while piece := await self.read():
            out += piece
            if len(out) > MAX_FIELD_BYTES:
                raise MalformedBody("a form field is too long")
        return bytes(out)
