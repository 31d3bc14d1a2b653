"""The Uploads API (OpenAI's): POST /v1/uploads, POST /v1/uploads/{upload_id}/parts (multipart:
`data`, streamed to the database as it arrives), POST /v1/uploads/{upload_id}/complete,
POST /v1/uploads/{upload_id}/cancel (services/uploads.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tokendock.errors import InvalidRequest
from tokendock.protocol.files import MalformedBody, UploadCompleteRequest, UploadCreateRequest
from tokendock.protocol.stored import storable_text
from tokendock.services.uploads import Uploads
from tokendock.web.api.files import form_reader, malformed, part_bytes
from tokendock.web.deps import CurrentKey, parse_body
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1/uploads")


def uploads_of(request: Request) -> Uploads:
    uploads: Uploads = request.app.state.uploads
    return uploads


@router.post("")
async def create_upload(request: Request, key: CurrentKey) -> JSONResponse:
    body = await parse_body(request, UploadCreateRequest)
    if not storable_text(body.mime_type):
        raise InvalidRequest("Invalid 'mime_type'.", param="mime_type")
    created = await uploads_of(request).create(
        key.account_id, body.filename, body.purpose, body.bytes, body.mime_type
    )
    return JSONResponse(created)


@router.post("/{upload_id}/parts")
async def add_part(upload_id: str, request: Request, key: CurrentKey) -> JSONResponse:
    uploads = uploads_of(request)
    reader = form_reader(request)
    try:
        while (part := await reader.next_part()) is not None:
            if part.name == "data":
                added = await uploads.add_part(key.account_id, upload_id, part_bytes(reader))
                return JSONResponse(added)
    except MalformedBody as exc:
        raise malformed(exc) from None
    raise InvalidRequest("Missing required parameter: 'data'.", param="data")


@router.post("/{upload_id}/complete")
async def complete_upload(upload_id: str, request: Request, key: CurrentKey) -> JSONResponse:
    body = await parse_body(request, UploadCompleteRequest)
    done = await uploads_of(request).complete(key.account_id, upload_id, body.part_ids, body.md5)
    return JSONResponse(done)


@router.post("/{upload_id}/cancel")
async def cancel_upload(upload_id: str, request: Request, key: CurrentKey) -> JSONResponse:
    return JSONResponse(await uploads_of(request).cancel(key.account_id, upload_id))
