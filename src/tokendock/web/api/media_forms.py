"""Pass-through routes with multipart bodies, for upstream models of a matching task:

    POST /v1/audio/transcriptions   transcription   (file → text, JSON, subtitles, or SSE)
    POST /v1/audio/translations     transcription
    POST /v1/images/edits           image           (image[] / mask / prompt → data[])

A form is never held in memory. Its parts are read in order until `model` is known
(protocol/files.py MultipartReader): text fields are kept (bounded), a file that comes BEFORE
`model` is spooled to a temporary file (bounded by the largest `max_file_bytes` of any
pass-through model: 413 past it) that is deleted when the request ends. Once `model` is known,
the first file after it is not read before admission: the body goes upstream re-encoded part by
part (the deployment's model name in `model`) as the client's bytes arrive. Such a live body is
not retried once its first byte went out (a 502 envelope); a form whose files were all spooled
is retried like JSON. The files' bytes together may not pass the model's `max_file_bytes`:
Content-Length says it before anything is admitted, else the count while streaming does (413;
the hold released). The client leaving mid-upload releases the hold (nothing is billed).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.errors import ClientLeft, InvalidRequest, RequestTooLarge
from tokendock.inference.backend import FileSeen, InferenceRequest, Opaque
from tokendock.protocol.files import MalformedBody, MultipartReader, PartHeaders
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.files import FORM_MARGIN, form_reader, malformed
from tokendock.web.api.media import Door, model_of, user_of
from tokendock.web.deps import Services, current_key, services_of
from tokendock.web.relay import relay
from tokendock.web.shutdown import CLIENT_GONE

MAX_FIELD = 64 * 1024  # a text field (an image edit's prompt may be 32,000 characters)
MAX_FIELDS = 64  # text fields and files in one form
SPOOL_PIECE = 256 * 1024

DOORS = {
    "/v1/audio/transcriptions": Door(
        "transcription", "/audio/transcriptions", "audio.transcriptions", ()
    ),
    "/v1/audio/translations": Door(
        "transcription", "/audio/translations", "audio.translations", ()
    ),
    "/v1/images/edits": Door("image", "/images/edits", "images.edits", ()),
}


@dataclass(slots=True)
class Part:
    """One part of the form as read before admission: a text field, or a spooled file."""

    headers: PartHeaders
    value: bytes = b""
    spool: IO[bytes] | None = None


@dataclass(slots=True)
class Form:
    parts: list[Part] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    live: PartHeaders | None = None  # the first file after `model`: not read yet
    seen: FileSeen = field(default_factory=FileSeen)

    def close(self) -> None:
        for part in self.parts:
            if part.spool is not None:
                part.spool.close()


class Files:
    """The files' bytes of one request, against a limit (413 past it)."""

    def __init__(self, limit: int, seen: FileSeen):
        self.limit, self.seen, self.total = limit, seen, 0

    def count(self, piece: bytes) -> None:
        self.total += len(piece)
        if self.total > self.limit:
            raise RequestTooLarge(
                f"The uploaded file is larger than this model takes ({self.limit} bytes).",
                code="file_too_large",
            )
        self.seen.saw(piece)


async def read_form(reader: MultipartReader, spool_limit: int, data_dir: str) -> Form:
    """The form's parts up to `model` and the first file after it (see the module's doc)."""
    form = Form()
    files = Files(spool_limit, form.seen)
    try:
        while (part := await reader.next_part()) is not None:
            if len(form.parts) >= MAX_FIELDS:
                raise InvalidRequest(f"A form may have at most {MAX_FIELDS} parts.")
            if part.filename is None:
                value = await _field(reader, part.name)
                form.parts.append(Part(part, value))
                form.fields.setdefault(part.name, value.decode("utf-8", "replace"))
                if part.name == "model":
                    form.model = form.fields["model"]
                continue
            if form.model is not None:
                form.live = part
                break
            form.parts.append(Part(part, spool=await _spool(reader, files, data_dir)))
    except BaseException:
        form.close()
        raise
    return form


async def _field(reader: MultipartReader, name: str) -> bytes:
    out = bytearray()
    while piece := await reader.read():
        out += piece
        if len(out) > MAX_FIELD:
            raise InvalidRequest(f"The form field '{name}' is too long.", param=name)
    return bytes(out)


async def _spool(reader: MultipartReader, files: Files, data_dir: str) -> IO[bytes]:
    # Deleted when closed (Form.close) or when the process ends: never left behind.
    spool = tempfile.TemporaryFile(dir=data_dir)  # noqa: SIM115
    try:
        while piece := await reader.read():
            files.count(piece)
            await asyncio.to_thread(spool.write, piece)
    except BaseException:
        spool.close()
        raise
    return spool


def form_body(
    form: Form, reader: MultipartReader, files: Files
) -> tuple[str, Callable[[str], AsyncIterator[bytes]]]:
    """The body's content type and the body for a deployment: the form re-encoded (our
    boundary), `model` replaced by the deployment's name."""
    boundary = "tokendock-" + secrets.token_hex(12)

    def head(headers: PartHeaders) -> bytes:
        disposition = f'form-data; name="{_quoted(headers.name)}"'
        if headers.filename is not None:
            disposition += f'; filename="{_quoted(headers.filename)}"'
        lines = f"--{boundary}\r\ncontent-disposition: {disposition}\r\n"
        if headers.content_type:
            lines += f"content-type: {headers.content_type}\r\n"
        return (lines + "\r\n").encode("utf-8")

    def text(headers: PartHeaders, value: bytes, model: str) -> bytes:
        return head(headers) + (model.encode() if headers.name == "model" else value) + b"\r\n"

    async def body(model: str) -> AsyncIterator[bytes]:
        for part in form.parts:
            if part.spool is None:
                yield text(part.headers, part.value, model)
                continue
            yield head(part.headers)
            await asyncio.to_thread(part.spool.seek, 0)
            while piece := await asyncio.to_thread(part.spool.read, SPOOL_PIECE):
                yield piece
            yield b"\r\n"
        live = form.live
        try:
            while live is not None:
                yield head(live)
                if live.filename is None:
                    yield await _field(reader, live.name) + b"\r\n"  # model: sent before
                else:
                    while piece := await reader.read():
                        files.count(piece)
                        yield piece
                    yield b"\r\n"
                live = await reader.next_part()
                if live is not None and live.name == "model" and live.filename is None:
                    await _field(reader, "model")  # a second `model` is dropped
                    live = await reader.next_part()
        except ClientDisconnect:
            raise ClientLeft("The client went away during its upload.") from None
        except MalformedBody as exc:
            raise malformed(exc) from None
        yield f"--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def spool_limit(deps: Services, door: Door) -> int:
    """The largest file a model of the route's task takes: what a file before `model` may be.
    No such model on this server: a 400 before the body is read."""
    sizes = [s.max_file_bytes for s in deps.directory.visible() if s.task == door.task]
    if not sizes:
        raise InvalidRequest(
            f"No model on this server serves '{door.task}' requests.",
            param="model",
            code="model_not_supported",
        )
    return max(sizes)


def handler(door: Door) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        deps = services_of(request)
        key = await current_key(request)
        reader = form_reader(request)
        try:
            form = await read_form(reader, spool_limit(deps, door), str(deps.settings.data_dir))
        except ClientDisconnect:
            return Response(status_code=CLIENT_GONE)
        except MalformedBody as exc:
            raise malformed(exc) from None
        try:
            return await _forward(request, deps, key, door, form, reader)
        finally:
            form.close()

    return handle


async def _forward(
    request: Request, deps: Services, key: KeyRow, door: Door, form: Form, reader: MultipartReader
) -> Response:
    model = model_of(deps, door, form.model)
    spec = deps.directory.check(model)
    limit = spec.max_file_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FORM_MARGIN:
        raise RequestTooLarge(
            f"The upload is larger than the model '{model}' takes ({limit} bytes).",
            code="file_too_large",
        )
    if form.seen.size > limit:
        raise RequestTooLarge(
            f"The uploaded file is larger than the model '{model}' takes ({limit} bytes).",
            code="file_too_large",
        )
    files = Files(limit, form.seen)
    files.total = form.seen.size
    content_type, body = form_body(form, reader, files)
    opaque = Opaque(
        door.task,
        door.path,
        content_type,
        body,
        form.fields,
        replayable=form.live is None,
        file=form.seen,
    )
    req = InferenceRequest(
        kind="opaque",
        model=model,
        user=user_of(form.fields.get("user")),
        opaque=opaque,
        endpoint=door.endpoint,
    )
    return await relay(request, deps, key, req, watch=form.live is None)


routes = [Route(path, handler(door), methods=["POST"]) for path, door in DOORS.items()]
