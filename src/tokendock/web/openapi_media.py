"""The pass-through routes' operations in /openapi.json (web/openapi.py merges `paths(make)` and
`schemas()`): audio, images, moderations, rerank and score, served by upstream models of the
matching catalog task. Their answers are the upstream's bytes as it sent them — JSON, text,
subtitles, audio or server-sent events — so the 200 lists each content type with a loose schema.
"""

from __future__ import annotations

from typing import Any

from tokendock.web.openapi_shapes import STRING, Schema, obj
from tokendock.web.openapi_stored import Make, Operation

FILE: Schema = {"type": "string", "contentMediaType": "application/octet-stream"}
TEXTS: Schema = {"anyOf": [STRING, {"type": "array", "items": STRING}]}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
LOOSE = {"additionalProperties": True}

TRANSCRIPTION_FORM: Schema = {
    **obj(
        {
            "file": FILE,
            "model": STRING,
            "language": STRING,
            "prompt": STRING,
            "response_format": {
                "type": "string",
                "enum": ["json", "text", "srt", "verbose_json", "vtt"],
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "stream": {"type": "boolean"},
        },
        required=["file", "model"],
    ),
    **LOOSE,
}
IMAGE_EDIT_FORM: Schema = {
    **obj(
        {"image": FILE, "mask": FILE, "prompt": STRING, "model": STRING, "n": {"type": "integer"}},
        required=["image", "prompt", "model"],
    ),
    **LOOSE,
}
REQUESTS: dict[str, Schema] = {
    "SpeechRequest": {
        **obj(
            {"model": STRING, "input": STRING, "voice": STRING, "response_format": STRING},
            required=["model", "input", "voice"],
        ),
        **LOOSE,
    },
    "ImageGenerationRequest": {
        **obj(
            {"model": STRING, "prompt": STRING, "n": {"type": "integer"}, "size": STRING},
            required=["model", "prompt"],
        ),
        **LOOSE,
    },
    "ModerationRequest": {**obj({"model": STRING, "input": TEXTS}, required=["input"]), **LOOSE},
    "RerankRequest": {
        **obj(
            {
                "model": STRING,
                "query": STRING,
                "documents": {"type": "array", "items": STRING},
                "top_n": {"type": "integer"},
            },
            required=["model", "query", "documents"],
        ),
        **LOOSE,
    },
    "ScoreRequest": {
        **obj(
            {"model": STRING, "text_1": TEXTS, "text_2": TEXTS},
            required=["model", "text_1", "text_2"],
        ),
        **LOOSE,
    },
}


def _relayed(op: Operation, *kinds: str) -> Operation:
    """The upstream's answer as it sent it: each content type it may have."""
    content = {
        kind: {"schema": ANY_OBJECT if kind == "application/json" else STRING} for kind in kinds
    }
    op["responses"]["200"]["content"] = content
    return op


def _form(op: Operation, schema: Schema) -> Operation:
    op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    return op


AUDIO_TEXT = ("application/json", "text/plain", "text/event-stream")
ERRORS = ("400", "401", "402", "404", "429", "502", "503")


def paths(make: Make) -> dict[str, dict[str, Operation]]:
    def json_route(summary: str, body: str, *kinds: str) -> Operation:
        return _relayed(make(summary, "PassThroughAnswer", ERRORS, body=body), *kinds)

    def form_route(summary: str, form: Schema, *kinds: str) -> Operation:
        op = make(summary, "PassThroughAnswer", (*ERRORS, "413"))
        return _relayed(_form(op, form), *kinds)

    audio = ("audio/mpeg", "audio/wav", "audio/ogg", "audio/aac", "audio/flac", "audio/pcm")
    return {
        "/v1/audio/transcriptions": {
            "post": form_route("Transcribe audio (upstream)", TRANSCRIPTION_FORM, *AUDIO_TEXT)
        },
        "/v1/audio/translations": {
            "post": form_route("Translate audio (upstream)", TRANSCRIPTION_FORM, *AUDIO_TEXT)
        },
        "/v1/audio/speech": {
            "post": json_route(
                "Speak text (upstream)", "SpeechRequest", *audio, "text/event-stream"
            )
        },
        "/v1/images/generations": {
            "post": json_route(
                "Generate images (upstream)", "ImageGenerationRequest", "application/json"
            )
        },
        "/v1/images/edits": {
            "post": form_route("Edit an image (upstream)", IMAGE_EDIT_FORM, "application/json")
        },
        "/v1/moderations": {
            "post": json_route("Classify text (upstream)", "ModerationRequest", "application/json")
        },
        "/v1/rerank": {
            "post": json_route("Rerank documents (upstream)", "RerankRequest", "application/json")
        },
        "/v1/score": {
            "post": json_route("Score text pairs (upstream)", "ScoreRequest", "application/json")
        },
    }


def schemas() -> dict[str, Any]:
    return {**REQUESTS, "PassThroughAnswer": ANY_OBJECT}
