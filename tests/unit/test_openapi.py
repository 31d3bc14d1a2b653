"""web/openapi.py: the document is valid OpenAPI, describes every /v1 route the app serves, and
its request schemas are the ones the endpoints validate with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import schemathesis

from tokendock.app import create_app
from tokendock.config import Settings
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.web.openapi import document


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(document())
    labels = {result.ok().label for result in schema.get_all_operations()}  # type: ignore[union-attr]
    assert "POST /v1/chat/completions" in labels


def routes_of(routes: list[Any]) -> list[tuple[str, set[str]]]:
    """(path, methods) of plain routes and of those in included routers (which FastAPI keeps
    as one entry per router; a route's path has its router's prefix), however deep."""
    out = []
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            out += routes_of(router.routes)
        elif hasattr(route, "methods"):
            out.append((route.path, set(route.methods or ())))
    return out


async def test_every_v1_route_is_documented_and_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/td.db")
    app = create_app(settings)
    served = set()
    for path, methods in routes_of(app.routes):
        if path.startswith("/v1"):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
            served |= {(method, path) for method in methods if method != "HEAD"}
    doc = document()
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if path.startswith("/v1")
        for method in item
    }
    assert served == documented
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://td") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == doc


def test_request_bodies_come_from_the_protocol_models() -> None:
    schemas = document()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert set(chat["properties"]) == set(ChatCompletionRequest.model_fields)
    assert chat["required"] == ["model", "messages"]
    bias = chat["properties"]["logit_bias"]["anyOf"][0]
    assert bias["propertyNames"]["pattern"] == "^[0-9]{1,10}$"
    op = document()["paths"]["/v1/chat/completions"]["post"]
    assert op["security"] == [{"apiKey": []}]
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
