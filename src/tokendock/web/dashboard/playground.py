"""The playground page; the browser calls /v1/chat/completions (or /v1/embeddings) itself
(static/playground.js) with the session's playground key, so its requests are limited and billed
like any other. Modes: text, JSON (`response_format`), tools (`tools` + `tool_choice`) and
embeddings; embedding models are offered only in the embeddings mode."""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)

# What the tools mode starts with: one function with JSON-schema parameters.
EXAMPLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 40},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
]


@router.get("/dashboard/playground")
async def playground(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    directory = services.directory
    models = [
        (s.id, s.task)
        for s in directory.visible()
        if directory.price_spec(s) is not None and s.task in ("generation", "embedding")
    ]  # pass-through models (audio, images …) have routes of their own
    return render(
        request,
        "playground.html",
        session,
        page="playground",
        account=account,
        models=models,
        example_tools=json.dumps(EXAMPLE_TOOLS, indent=2),
    )
