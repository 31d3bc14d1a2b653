"""Pass-through routes with JSON bodies, for upstream models of a matching task (catalog `task`):

    POST /v1/audio/speech          speech       (input → audio bytes, or SSE)
    POST /v1/images/generations    image        (prompt → data[])
    POST /v1/moderations           moderation   (`model` optional: the first moderation model)
    POST /v1/rerank                rerank       (Cohere / Jina / vLLM shape)
    POST /v1/score                 rerank       (vLLM's)

The body goes upstream as the client sent it (its `model` set to the deployment's name),
through the one pipeline — bounded, admitted, held, settled by the model's unit
(inference/upstream/passthrough.py) — and the upstream's bytes come back as they are
(web/relay.py). Checked before admission: the body is a JSON object by the server's parser
policy (protocol/screen.py), `model` names a model of the route's task (400
`model_not_supported` otherwise, an embedded model too), the route's required fields are there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.errors import InvalidRequest
from tokendock.inference.backend import InferenceRequest, Opaque, Passthrough
from tokendock.protocol.bounds import MAX_USER_CHARS
from tokendock.protocol.screen import screen
from tokendock.web.deps import Services, current_key, services_of
from tokendock.web.relay import relay


@dataclass(frozen=True, slots=True)
class Door:
    """One pass-through route: the catalog task it needs, the upstream path, the name on
    usage rows, and the fields a request must carry."""

    task: str
    path: str
    endpoint: str
    required: tuple[str, ...]


DOORS = {
    "/v1/audio/speech": Door("speech", "/audio/speech", "audio.speech", ("input",)),
    "/v1/images/generations": Door(
        "image", "/images/generations", "images.generations", ("prompt",)
    ),
    "/v1/moderations": Door("moderation", "/moderations", "moderations", ("input",)),
    "/v1/rerank": Door("rerank", "/rerank", "rerank", ("query", "documents")),
    "/v1/score": Door("rerank", "/score", "score", ("text_1", "text_2")),
}


def model_of(deps: Services, door: Door, given: object) -> str:
    """The request's model: a string, or for moderations the first moderation model."""
    if given is None and door.task == "moderation":
        for spec in deps.directory.visible():
            if spec.task == "moderation":
                return spec.id
    if not isinstance(given, str) or not given:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    return given


def user_of(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_USER_CHARS else None


def json_body(payload: dict[str, Any]) -> Callable[[str], AsyncIterator[bytes]]:
    """The body for a deployment: the client's object with the deployment's model name."""

    async def body(model: str) -> AsyncIterator[bytes]:
        yield orjson.dumps({**payload, "model": model})

    return body


def media_request(deps: Services, door: Door, raw: bytes) -> InferenceRequest:
    payload = screen(raw) if raw.strip() else None
    if payload is None:
        raise InvalidRequest("The request body must be a JSON object (valid JSON).")
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = model_of(deps, door, payload.get("model"))
    for name in door.required:
        if payload.get(name) is None:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    opaque = Opaque(door.task, door.path, "application/json", json_body(payload), payload)
    return InferenceRequest(
        kind="opaque",
        model=model,
        user=user_of(payload.get("user")),
        payload=Passthrough(raw),
        opaque=opaque,
        endpoint=door.endpoint,
    )


def handler(door: Door) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        deps = services_of(request)
        key = await current_key(request)
        req = media_request(deps, door, await request.body())
        return await relay(request, deps, key, req, watch=True)

    return handle


routes = [Route(path, handler(door), methods=["POST"]) for path, door in DOORS.items()]
