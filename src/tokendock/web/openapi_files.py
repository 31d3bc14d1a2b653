"""The Files and Uploads APIs' operations and shapes in /openapi.json (web/openapi.py merges
them: `paths(make)` with its JSON operation builder, and `schemas()`). The two upload routes
take `multipart/form-data` and a file's content is bytes: their operations are adjusted here."""

from __future__ import annotations

from typing import Any

from tokendock.protocol.files import (
    CLIENT_PURPOSES,
    EXPIRES_MAX,
    EXPIRES_MIN,
    MAX_LIST,
    SERVER_PURPOSES,
    UploadCompleteRequest,
    UploadCreateRequest,
)
from tokendock.web.openapi_shapes import (
    INTEGER,
    NULL_INTEGER,
    NULL_STRING,
    STRING,
    Schema,
    const,
    obj,
)
from tokendock.web.openapi_stored import Make, Operation, const_true

PURPOSES = {"type": "string", "enum": [*CLIENT_PURPOSES, *SERVER_PURPOSES]}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


LIST_PARAMETERS = [
    _query("purpose", PURPOSES, "Only files of this purpose."),
    _query("after", {"type": "string", "maxLength": 200}, "The last id of the previous page."),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": MAX_LIST},
        "Files per page.",
    ),
    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "By time."),
]
FILE_FORM: Schema = obj(
    {
        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
        "purpose": {"type": "string", "enum": list(CLIENT_PURPOSES)},
        "expires_after[anchor]": const("created_at"),
        "expires_after[seconds]": {
            "type": "integer",
            "minimum": EXPIRES_MIN,
            "maximum": EXPIRES_MAX,
        },
    },
    required=["file", "purpose"],
)
PART_FORM: Schema = obj(
    {"data": {"type": "string", "contentMediaType": "application/octet-stream"}},
    required=["data"],
)


def _form(op: Operation, schema: Schema) -> Operation:
    op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    return op


def _bytes(op: Operation) -> Operation:
    op["responses"]["200"]["content"] = {"application/octet-stream": {"schema": {"type": "string"}}}
    return op


def paths(make: Make) -> dict[str, dict[str, Operation]]:
    file_id, upload_id = [_path_id("file_id")], [_path_id("upload_id")]
    errors = ("400", "401", "404")
    return {
        "/v1/files": {
            "post": _form(make("Upload a file", "FileObject", ("400", "401", "413")), FILE_FORM),
            "get": make(
                "The key's account's files", "FileList", ("400", "401"), parameters=LIST_PARAMETERS
            ),
        },
        "/v1/files/{file_id}": {
            "get": make("A file", "FileObject", ("401", "404"), parameters=file_id),
            "delete": make("Delete a file", "FileDeleted", ("401", "404"), parameters=file_id),
        },
        "/v1/files/{file_id}/content": {
            "get": _bytes(
                make("A file's content", "FileObject", ("401", "404"), parameters=file_id)
            ),
        },
        "/v1/uploads": {
            "post": make("Start an upload", "Upload", ("400", "401"), body="UploadCreateRequest"),
        },
        "/v1/uploads/{upload_id}/parts": {
            "post": _form(
                make("Add a part", "UploadPart", (*errors, "413"), parameters=upload_id),
                PART_FORM,
            ),
        },
        "/v1/uploads/{upload_id}/complete": {
            "post": make(
                "Complete an upload into a file",
                "Upload",
                errors,
                body="UploadCompleteRequest",
                parameters=upload_id,
            ),
        },
        "/v1/uploads/{upload_id}/cancel": {
            "post": make("Cancel an upload", "Upload", errors, parameters=upload_id),
        },
    }


FILE: Schema = obj(
    {
        "id": STRING,
        "object": const("file"),
        "bytes": INTEGER,
        "created_at": INTEGER,
        "expires_at": NULL_INTEGER,
        "filename": STRING,
        "purpose": PURPOSES,
        "status": const("processed"),
        "status_details": NULL_STRING,
    },
    required=["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
)


def schemas() -> dict[str, Schema]:
    upload_status = {"type": "string", "enum": ["pending", "completed", "cancelled", "expired"]}
    return {
        "FileObject": FILE,
        "FileList": obj(
            {
                "object": const("list"),
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/FileObject"}},
                "first_id": NULL_STRING,
                "last_id": NULL_STRING,
                "has_more": {"type": "boolean"},
            }
        ),
        "FileDeleted": obj({"id": STRING, "object": const("file"), "deleted": const_true()}),
        "Upload": obj(
            {
                "id": STRING,
                "object": const("upload"),
                "bytes": INTEGER,
                "created_at": INTEGER,
                "expires_at": INTEGER,
                "filename": STRING,
                "purpose": PURPOSES,
                "status": upload_status,
                "file": {"anyOf": [{"$ref": "#/components/schemas/FileObject"}, {"type": "null"}]},
            }
        ),
        "UploadPart": obj(
            {
                "id": STRING,
                "object": const("upload.part"),
                "created_at": INTEGER,
                "upload_id": STRING,
            }
        ),
        "UploadCreateRequest": UploadCreateRequest.model_json_schema(mode="validation"),
        "UploadCompleteRequest": UploadCompleteRequest.model_json_schema(mode="validation"),
    }
