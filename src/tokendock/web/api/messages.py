"""POST /v1/messages (Anthropic's Messages API): the wire adapter — Anthropic's JSON body → the
one `InferenceRequest`, the answer → a message body or Anthropic's named stream events
(web/api/messages_stream.py). Admission, billing, rate limits, idempotency and recording are the
pipeline's (web/api/respond.py), exactly as for chat completions.

- The key comes in `x-api-key` or `Authorization: Bearer`; `anthropic-version` is accepted
  whatever its value. Every error on these routes is Anthropic's envelope (protocol/messages.py).
- `tool_use` / `tool_result` blocks become the typed turns' tool calls and tool turns, so the
  embedded engine renders them as it renders chat's tool history. An upstream model is called
  with chat completions: the request is rewritten as a chat completions body (`Passthrough`).
- `stop_reason` "stop_sequence" names the stop sequence when the backend says which one fired
  (the embedded engine does; an OpenAI-compatible upstream does not, so there it is "end_turn").
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock import observability
from tokendock.errors import TokenDockError
from tokendock.inference.backend import Event, Features, InferenceRequest, Passthrough
from tokendock.inference.structured import Tool, ToolUse
from tokendock.inference.vocabulary import ChatTurn, ToolCall
from tokendock.protocol.messages import (
    MessagesInput,
    MessagesRequest,
    MessageTextBlock,
    MessageToolResultBlock,
    MessageToolUseBlock,
    error_envelope,
    error_status,
    message_body,
    stop_reason,
    text_block,
    tool_input,
    tool_use_block,
    tool_use_id,
)
from tokendock.services.answer import Answer
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.messages_stream import message_id, stream_events
from tokendock.web.api.respond import Stamp, serve
from tokendock.web.deps import current_key, parse_body, request_id, services_of
from tokendock.web.errors import public
from tokendock.web.headers import of_error
from tokendock.web.responses import JSONResponse


def conversation(req: MessagesInput) -> tuple[ChatTurn, ...]:
    """The system prompt and messages as typed turns: a user message's `tool_result` blocks
    become tool turns, an assistant message's `tool_use` blocks its tool calls."""
    turns: list[ChatTurn] = []
    system = req.system_text()
    if system:
        turns.append(ChatTurn("system", system))
    for msg in req.messages:
        if msg.role == "assistant":
            texts, calls = [], []
            for block in msg.blocks():
                if isinstance(block, MessageToolUseBlock):
                    arguments = orjson.dumps(block.input).decode()
                    calls.append(ToolCall(block.id, block.name, arguments))
                elif isinstance(block, MessageTextBlock):
                    texts.append(block.text)
            turns.append(ChatTurn("assistant", "".join(texts), tool_calls=tuple(calls)))
            continue
        pending: list[str] = []
        for block in msg.blocks():
            if isinstance(block, MessageToolResultBlock):
                if pending:
                    turns.append(ChatTurn("user", "\n".join(pending)))
                    pending = []
                turns.append(ChatTurn("tool", block.text(), tool_call_id=block.tool_use_id))
            elif isinstance(block, MessageTextBlock):
                pending.append(block.text)
        if pending or not msg.blocks():
            turns.append(ChatTurn("user", "\n".join(pending)))
    return tuple(turns)


def tool_use(req: MessagesInput) -> ToolUse | None:
    if not req.tools:
        return None
    tools = tuple(
        Tool(t.name, t.description or "", t.input_schema, param=f"tools[{i}]")
        for i, t in enumerate(req.tools)
    )
    choice = req.tool_choice
    parallel = not (choice is not None and choice.disable_parallel_tool_use)
    return ToolUse(tools, req.tool_choice_name(), parallel)


def inference_request(req: MessagesRequest) -> InferenceRequest:
    turns = conversation(req)
    tools = tool_use(req)
    return InferenceRequest(
        kind="chat",
        model=req.model,
        turns=turns,
        tools=tools,
        prompt_bytes=(req.prompt_bound(),),
        max_tokens=req.max_tokens,
        stop=tuple(req.stop_sequences or ()),
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        user=req.metadata.user_id if req.metadata is not None else None,
        stream=bool(req.stream),
        features=Features(tools=tools is not None, tool_choice=_openai_choice(req)),
        payload=Passthrough(chat_body(req, turns, tools)),
        endpoint="messages",
    )


def _openai_choice(req: MessagesInput) -> str | None:
    if req.tool_choice is None:
        return None
    name = req.tool_choice_name()
    return name if name in ("auto", "required", "none") else "named"


def chat_body(req: MessagesRequest, turns: tuple[ChatTurn, ...], tools: ToolUse | None) -> bytes:
    """The request as a chat completions body: what an upstream deployment is sent."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_chat_message(t) for t in turns],
        "max_tokens": req.max_tokens,
        "stream": bool(req.stream),
    }
    optional = {
        "stop": req.stop_sequences,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,  # not OpenAI's: servers that know it (vLLM, llama.cpp) honour it
        "user": req.metadata.user_id if req.metadata is not None else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if tools is not None:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in tools.tools
        ]
        choice = tools.choice
        named = {"type": "function", "function": {"name": choice}}
        body["tool_choice"] = choice if choice in ("auto", "required", "none") else named
        if not tools.parallel:
            body["parallel_tool_calls"] = False
    return orjson.dumps(body)


def _chat_message(turn: ChatTurn) -> dict[str, Any]:
    if turn.role == "tool":
        return {"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content}
    if turn.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in turn.tool_calls
        ]
        return {"role": "assistant", "content": turn.content or None, "tool_calls": calls}
    return {"role": turn.role, "content": turn.content}


class MessagesWire:
    """The whole message body (streams: messages_stream.py)."""

    prefix = "msg"
    chunk_object = "message"

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return None

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        raise AssertionError("streams are rendered by messages_stream.stream_events")

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        choice = answer.choices[0] if answer.choices else None
        content: list[dict[str, Any]] = []
        if choice is not None and choice.text:
            content.append(text_block(choice.text))
        for call in (choice.tool_calls or []) if choice is not None else []:
            fn = call.get("function") or {}
            content.append(
                tool_use_block(
                    tool_use_id(str(call.get("id") or "")),
                    str(fn.get("name") or ""),
                    tool_input(str(fn.get("arguments") or "")),
                )
            )
        reason = stop_reason(choice.finish_reason) if choice is not None else "end_turn"
        matched = choice.stop_sequence if choice is not None else None
        if matched is not None and reason == "end_turn":
            reason = "stop_sequence"
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        return message_body(
            message_id(stamp), stamp.model, content, reason, prompt, completion, matched, cached
        )


WIRE = MessagesWire()


async def authenticate(request: Request) -> KeyRow:
    """`x-api-key` (Anthropic's header) or, without it, `Authorization` as on every route."""
    api_key = request.headers.get("x-api-key")
    if api_key is None or "authorization" in request.headers:
        return await current_key(request)
    key = await services_of(request).accounts.authenticate(f"Bearer {api_key}")
    record = observability.current()
    if record is not None:
        record.key = f"{key.prefix}…{key.last4}"
    return key


def error_response(err: TokenDockError) -> Response:
    """Anthropic's envelope, with the headers an OpenAI-style error would have."""
    err = public(err)
    record = observability.current()
    if record is not None:
        record.error = err.code or err.type
    return JSONResponse(error_envelope(err), status_code=error_status(err), headers=of_error(err))


async def messages(request: Request) -> Response:
    try:
        deps = services_of(request)
        key = await authenticate(request)
        req = await parse_body(request, MessagesRequest)
        req.check()
        return await serve(request, deps, key, inference_request(req), WIRE, stream=stream_events)
    except TokenDockError as exc:
        return error_response(exc)


async def count_tokens(request: Request) -> Response:
    """The request's input tokens, counted as the model would read them; not billed."""
    try:
        deps = services_of(request)
        key = await authenticate(request)
        req = await parse_body(request, MessagesInput)
        req.check()
        counted = InferenceRequest(
            kind="chat",
            model=req.model,
            turns=conversation(req),
            tools=tool_use(req),
            prompt_bytes=(req.prompt_bound(),),
            features=Features(tools=bool(req.tools), tool_choice=_openai_choice(req)),
        )
        record = observability.current()
        if record is not None:
            record.model = req.model
        tokens = await deps.counter.count(key, counted, request_id(request), "messages")
        return JSONResponse({"input_tokens": tokens})
    except TokenDockError as exc:
        return error_response(exc)


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
