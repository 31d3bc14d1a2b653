"""The Files API (OpenAI's): POST /v1/files (multipart: `file`, `purpose`, optional
`expires_after[anchor]` / `expires_after[seconds]`), GET /v1/files, GET /v1/files/{file_id},
GET /v1/files/{file_id}/content (streamed from the database), DELETE /v1/files/{file_id}.

The multipart body is read as it arrives (protocol/files.py: MultipartReader) and the file's
bytes go to the database chunk by chunk (services/files.py); the form is never spooled. The
server-wide body cap (`max_body_bytes`, web/middleware.py) stays as it is for every other
route: `BodyLimits` sends only the two upload routes to a second RequestContextMiddleware whose
cap is `file_max_bytes` plus a margin for the form's own bytes — the services enforce the exact
bounds with errors naming the field.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tokendock.config import Settings
from tokendock.errors import InvalidRequest
from tokendock.protocol.files import (
    CLIENT_PURPOSES,
    MAX_LIST,
    SERVER_PURPOSES,
    MalformedBody,
    MultipartReader,
    boundary_of,
    file_object,
)
from tokendock.services.files import Files, Incoming, check_filename, check_purpose, expiry
from tokendock.web.deps import CurrentKey, Deps
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1/files")

FORM_MARGIN = 1024 * 1024  # the form's own bytes around the file (headers, other fields)
# …and the pass-through forms (web/api/media_forms.py), bounded per model by `max_file_bytes`.
UPLOAD_PATHS = re.compile(
    r"/v1/files|/v1/uploads/[^/]+/parts|/v1/audio/(transcriptions|translations)|/v1/images/edits"
)


def upload_body_limit(settings: Settings) -> int:
    """The body cap of the upload routes."""
    return max(settings.file_max_bytes, settings.upload_part_max_bytes) + FORM_MARGIN


class BodyLimits:
    """Sends `POST` to the upload routes to `large` (the request middleware with the upload
    cap), everything else to `app` (the same middleware with the server's cap)."""

    def __init__(self, app: ASGIApp, large: ASGIApp):
        self.app = app
        self.large = large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and UPLOAD_PATHS.fullmatch(scope["path"])
        ):
            await self.large(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def form_reader(request: Request) -> MultipartReader:
    boundary = boundary_of(request.headers.get("content-type"))
    if boundary is None:
        raise InvalidRequest("Expected a multipart/form-data body (with its boundary).")
    return MultipartReader(request.stream(), boundary)


async def part_bytes(reader: MultipartReader) -> AsyncIterator[bytes]:
    """The current part's bytes, as they arrive."""
    while piece := await reader.read():
        yield piece


async def text_field(reader: MultipartReader, name: str) -> str:
    try:
        return (await reader.field()).decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"The form field '{name}' is not UTF-8 text.", param=name) from None


def malformed(exc: MalformedBody) -> InvalidRequest:
    return InvalidRequest(f"The multipart/form-data body is malformed: {exc}.")


def files_of(deps: Deps) -> Files:
    return deps.files


@router.post("")
async def create_file(request: Request, deps: Deps, key: CurrentKey) -> JSONResponse:
    files = files_of(deps)
    reader = form_reader(request)
    fields: dict[str, str] = {}
    incoming: Incoming | None = None
    try:
        while (part := await reader.next_part()) is not None:
            if part.name == "file" and part.filename is not None:
                if incoming is not None:
                    raise InvalidRequest("Send one 'file' per request.", param="file")
                purpose = fields.get("purpose")
                check_filename(part.filename, purpose, "file")
                incoming = await files.receive(key.account_id, part.filename, part_bytes(reader))
                continue
            fields[part.name] = await text_field(reader, part.name)
            if part.name == "purpose":
                check_purpose(fields["purpose"])  # before the file is read, when it comes first
        if "purpose" not in fields:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        check_purpose(fields["purpose"])
        if incoming is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        check_filename(incoming.row.filename, fields["purpose"], "file")
        seconds = expiry(fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]"))
        row = await files.keep(incoming, fields["purpose"], seconds)
    except MalformedBody as exc:
        if incoming is not None:
            await files.drop(incoming)
        raise malformed(exc) from None
    except BaseException:
        if incoming is not None:
            await files.drop(incoming)  # never kept: a no-op when `keep` already dropped it
        raise
    return JSONResponse(file_object(row))


Purpose = Annotated[str | None, Query(max_length=64)]
After = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST)]
Order = Annotated[Literal["asc", "desc"], Query()]


@router.get("")
async def list_files(
    deps: Deps,
    key: CurrentKey,
    purpose: Purpose = None,
    after: After = None,
    limit: Limit = MAX_LIST,
    order: Order = "desc",
) -> JSONResponse:
    if purpose is not None and purpose not in (*CLIENT_PURPOSES, *SERVER_PURPOSES):
        raise InvalidRequest(f"Invalid purpose '{purpose[:64]}'.", param="purpose")
    found = await files_of(deps).list(
        key.account_id, purpose=purpose, after=after, limit=limit, order=order
    )
    return JSONResponse(found)


@router.get("/{file_id}")
async def get_file(file_id: str, deps: Deps, key: CurrentKey) -> JSONResponse:
    return JSONResponse(file_object(await files_of(deps).get(key.account_id, file_id)))


@router.get("/{file_id}/content")
async def file_content(file_id: str, deps: Deps, key: CurrentKey) -> StreamingResponse:
    files = files_of(deps)
    row = await files.get(key.account_id, file_id)
    return StreamingResponse(
        files.content(row),
        media_type="application/octet-stream",
        headers={"content-length": str(row.bytes)},
    )


@router.delete("/{file_id}")
async def delete_file(file_id: str, deps: Deps, key: CurrentKey) -> JSONResponse:
    return JSONResponse(await files_of(deps).delete(key.account_id, file_id))
