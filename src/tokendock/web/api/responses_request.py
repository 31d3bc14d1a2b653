"""A Responses request → the ONE typed `InferenceRequest`: instructions and the conversation's
items (the previous response's, then this request's input) become chat turns; `tools`,
`tool_choice` and `text.format` become `ToolUse` / `OutputFormat`. An upstream model gets the
same request as a chat completions body (`Passthrough`).

A compaction item (POST /v1/responses/compact) becomes its summary, checked and opened before
(`opened`: summary by encrypted_content), in the system turn after the instructions: a summary
stands for what came before, and chat templates that want user and assistant turns to
alternate (Gemma's) accept a system turn first."""

from __future__ import annotations

from typing import Any

import orjson

from tokendock.catalog import ModelSpec
from tokendock.errors import ContextLengthExceeded, InvalidRequest
from tokendock.inference.backend import Features, InferenceRequest, Passthrough
from tokendock.inference.structured import OutputFormat, Tool, ToolUse
from tokendock.inference.vocabulary import ChatTurn, ToolCall
from tokendock.protocol.response_shapes import JSON
from tokendock.protocol.responses import ResponseRequest, item_bound, prompt_bound
from tokendock.services.compaction import summary_turn

TRUNCATION_KEEP = 1  # "auto" never drops the newest item (the question being asked)


def turns_of(
    instructions: str | None, items: list[JSON], opened: dict[str, str] | None = None
) -> tuple[ChatTurn, ...]:
    """Chat turns: instructions (and compaction summaries) as the system turn; consecutive
    function calls make one assistant turn (after its text, if the assistant's message came
    just before)."""
    turns: list[ChatTurn] = []
    system = "\n\n".join(t for t in (instructions, _summaries(items, opened)) if t)
    if system:
        turns.append(ChatTurn("system", system))
    for item in items:
        kind = item["type"]
        if kind == "compaction":
            continue  # in the system turn
        if kind == "message":
            text = "".join(p["text"] for p in item["content"])
            turns.append(ChatTurn(item["role"], text))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant":
                turns[-1] = ChatTurn("assistant", last.content, (*last.tool_calls, call))
            else:
                turns.append(ChatTurn("assistant", "", (call,)))
        else:
            turns.append(ChatTurn("tool", item["output"], tool_call_id=item["call_id"]))
    return tuple(turns)


def _summaries(items: list[JSON], opened: dict[str, str] | None) -> str:
    if not any(item["type"] == "compaction" for item in items):
        return ""
    if opened is None:  # a path that does not check compaction items (a batch line)
        raise InvalidRequest("Compaction items are not supported here.", param="input")
    return summary_turn(opened, items)


def tool_use(req: ResponseRequest) -> ToolUse | None:
    if not req.tools:
        return None
    tools = tuple(
        Tool(t["name"], t.get("description") or "", t.get("parameters"), param=f"tools[{i}]")
        for i, t in enumerate(req.tools)
    )
    return ToolUse(tools, req.choice(), req.parallel_tool_calls is not False)


def output_format(req: ResponseRequest) -> OutputFormat | None:
    fmt = req.text_format()
    if fmt["type"] == "json_object":
        return OutputFormat("json_object", param="text.format")
    if fmt["type"] == "json_schema":
        return OutputFormat("json_schema", fmt["schema"], fmt["name"], "text.format.schema")
    return None


def truncated(req: ResponseRequest, items: list[JSON], spec: ModelSpec) -> list[JSON]:
    """`truncation: "auto"`: the oldest items dropped until the prompt's bound (bytes, no
    tokenizer: at least its tokens) and the answer's budget fit the context window; "disabled"
    (the default): as given (the backend refuses an overflow with a 400)."""
    if req.truncation != "auto":
        return items
    window = spec.context_length
    budget = window - (req.max_output_tokens or 0)
    total = prompt_bound(req.instructions, items, req.tools)
    kept = list(items)
    while total > budget and len(kept) > TRUNCATION_KEEP:
        total -= item_bound(kept.pop(0))
    while kept and kept[0]["type"] == "function_call_output":
        total -= item_bound(kept.pop(0))  # a result without its call would confuse the model
    if total > budget:
        raise ContextLengthExceeded(
            f"The input does not fit this model's context window of {window} tokens even "
            "after truncation.",
            param="input",
        )
    return kept


def kept_parts(
    context: list[JSON], own: list[JSON], kept: list[JSON]
) -> tuple[list[JSON], list[JSON]]:
    """`kept` (what `truncated` left of [*context, *own]: a suffix) split back into the
    previous conversation's part and this request's. A response stores these — what its prompt
    read and was billed for — so a chain's stored size grows with what it paid, and the next
    continuation loads one row of at most a context window's items."""
    mine = min(len(own), len(kept))
    return kept[: len(kept) - mine], kept[len(kept) - mine :]


def inference_request(
    req: ResponseRequest,
    items: list[JSON],
    *,
    stream: bool,
    opened: dict[str, str] | None = None,
) -> InferenceRequest:
    """`opened`: the compaction items' summaries (checked: services/compaction.py)."""
    turns = turns_of(req.instructions, items, opened)
    fmt = req.text_format()["type"]
    choice = req.tool_choice if isinstance(req.tool_choice, str | None) else "named"
    return InferenceRequest(
        kind="chat",
        endpoint="responses",
        model=req.model,
        turns=turns,
        prompt_bytes=(prompt_bound(req.instructions, items, req.tools),),
        max_tokens=req.max_output_tokens,
        max_tokens_param="max_output_tokens",
        temperature=req.temperature,
        top_p=req.top_p,
        user=req.user,
        stream=stream,
        features=Features(
            tools=bool(req.tools),
            tool_choice=choice if req.tools else None,
            response_format=None if fmt == "text" else fmt,
        ),
        tools=tool_use(req),
        output=output_format(req),
        payload=Passthrough(orjson.dumps(chat_body(req, turns, stream))),
    )


def chat_body(req: ResponseRequest, turns: tuple[ChatTurn, ...], stream: bool) -> JSON:
    """The request as chat completions, for an upstream (the whole body bounds its prompt)."""
    body: JSON = {"model": req.model, "messages": [_message(t) for t in turns]}
    if stream:
        body["stream"] = True
    optional: dict[str, Any] = {
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.user,
        "parallel_tool_calls": req.parallel_tool_calls if req.tools else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    k: t[k] for k in ("name", "description", "parameters", "strict") if k in t
                },
            }
            for t in req.tools
        ]
        choice = req.choice()
        named = choice not in ("none", "auto", "required")
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice}} if named else choice
        )
    fmt = req.text_format()
    if fmt["type"] == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    return body


def _message(turn: ChatTurn) -> JSON:
    if turn.role == "tool":
        return {"role": "tool", "content": turn.content, "tool_call_id": turn.tool_call_id}
    message: JSON = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["content"] = turn.content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in turn.tool_calls
        ]
    return message
