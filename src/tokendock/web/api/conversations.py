"""The Conversations API (OpenAI's `/v1/conversations`), for the key's account only
(services/conversations.py):

POST   /v1/conversations                          create (optional `items`, `metadata`)
GET    /v1/conversations/{id}                     retrieve
POST   /v1/conversations/{id}                     update its `metadata`
DELETE /v1/conversations/{id}                     delete it and its items
GET    /v1/conversations/{id}/items               list (after, limit, order, include)
POST   /v1/conversations/{id}/items               append 1 to 20 items
GET    /v1/conversations/{id}/items/{item_id}     retrieve one item
DELETE /v1/conversations/{id}/items/{item_id}     delete one item (answers the conversation)

Items have the shapes of the Responses API's input items (protocol/responses.py). `include`
is accepted and has nothing to add (no item here carries what it would include).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.errors import InvalidRequest
from tokendock.protocol.responses import input_items
from tokendock.protocol.stored import (
    ConversationCreateRequest,
    ConversationItemsRequest,
    ConversationUpdateRequest,
)
from tokendock.services.conversations import Conversations
from tokendock.web.deps import current_key, parse_body
from tokendock.web.responses import JSONResponse

DEFAULT_LIMIT = 20


def conversations_of(request: Request) -> Conversations:
    conversations: Conversations = request.app.state.conversations
    return conversations


def _items(given: list[dict[str, object]] | None, param: str) -> list[dict[str, object]]:
    """Input items as stored; their errors name `items[…]`, not `input[…]`."""
    try:
        return input_items(given)
    except InvalidRequest as exc:
        where = exc.param or param
        message = str(exc).replace("'input", f"'{param}")
        raise InvalidRequest(message, param=where.replace("input", param, 1)) from None


async def create(request: Request) -> Response:
    key = await current_key(request)
    body = await parse_body(request, ConversationCreateRequest)
    items = _items(body.items, "items")
    made = await conversations_of(request).create(key.account_id, items, body.metadata)
    return JSONResponse(made)


async def one(request: Request) -> Response:
    """GET (retrieve), POST (update metadata) or DELETE a conversation."""
    key = await current_key(request)
    conversation_id = request.path_params["conversation_id"]
    conversations = conversations_of(request)
    if request.method == "DELETE":
        return JSONResponse(await conversations.delete(key.account_id, conversation_id))
    if request.method == "POST":
        await conversations.get(key.account_id, conversation_id)  # 404 before the body's 400
        body = await parse_body(request, ConversationUpdateRequest)
        updated = await conversations.update(key.account_id, conversation_id, body.metadata)
        return JSONResponse(updated)
    return JSONResponse(await conversations.get(key.account_id, conversation_id))


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
        raise InvalidRequest("Invalid 'limit': expected an integer from 1 to 100.", param="limit")
    return int(raw)


async def items(request: Request) -> Response:
    """GET (a page of items, newest first by default) or POST (append items)."""
    key = await current_key(request)
    conversation_id = request.path_params["conversation_id"]
    conversations = conversations_of(request)
    if request.method == "POST":
        await conversations.get(key.account_id, conversation_id)
        body = await parse_body(request, ConversationItemsRequest)
        added = _items(body.items, "items")
        return JSONResponse(await conversations.add_items(key.account_id, conversation_id, added))
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    found = await conversations.items(
        key.account_id,
        conversation_id,
        after=query.get("after"),
        limit=_limit(query.get("limit")),
        order=order,
    )
    return JSONResponse(found)


async def item(request: Request) -> Response:
    """GET or DELETE one item."""
    key = await current_key(request)
    conversation_id = request.path_params["conversation_id"]
    item_id = request.path_params["item_id"]
    conversations = conversations_of(request)
    if request.method == "DELETE":
        done = await conversations.delete_item(key.account_id, conversation_id, item_id)
        return JSONResponse(done)
    return JSONResponse(await conversations.item(key.account_id, conversation_id, item_id))


routes = [
    Route("/v1/conversations", create, methods=["POST"]),
    Route("/v1/conversations/{conversation_id}", one, methods=["GET", "POST", "DELETE"]),
    Route("/v1/conversations/{conversation_id}/items", items, methods=["GET", "POST"]),
    Route("/v1/conversations/{conversation_id}/items/{item_id}", item, methods=["GET", "DELETE"]),
]
