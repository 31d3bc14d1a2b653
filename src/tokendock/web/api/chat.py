"""POST /v1/chat/completions: the wire adapter — JSON body → `InferenceRequest`, events → chat
completion (chunk) bodies. Everything else is the pipeline's (web/api/respond.py)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from tokendock.inference.backend import Delta, Event, Features, InferenceRequest, Passthrough
from tokendock.inference.structured import OutputFormat, Tool, ToolUse
from tokendock.inference.vocabulary import ChatTurn, ToolCall
from tokendock.protocol.chat import (
    ChatCompletionRequest,
    Message,
    delta_choice,
    message_choice,
    message_text,
)
from tokendock.protocol.common import NO_USAGE, response_body
from tokendock.services.answer import Answer, Choice
from tokendock.web.api.respond import Stamp, endpoint, sampled, stamped
from tokendock.web.api.stored_chat import keeping


def inference_request(req: ChatCompletionRequest, body: bytes) -> InferenceRequest:
    plain = _plain(req)
    return InferenceRequest(
        kind="chat",
        turns=tuple(_turn(m) for m in req.messages),
        tools=None if plain else tool_use(req),
        output=None if plain else output_format(req),
        prompt_bytes=(req.prompt_bound(),),
        max_tokens=req.token_limit(),
        max_tokens_param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
        features=PLAIN if plain else features(req),
        payload=Passthrough(body),
        endpoint="chat.completions",
        **sampled(req),
    )


PLAIN = Features()


def _turn(m: Message) -> ChatTurn:
    if m.tool_calls:
        calls = tuple(
            ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments", ""))
            for c in m.tool_calls
        )
        return ChatTurn(m.role, message_text(m), tool_calls=calls)
    if m.role == "tool":
        return ChatTurn(m.role, message_text(m), tool_call_id=m.tool_call_id)
    return ChatTurn(m.role, message_text(m))


def tool_use(req: ChatCompletionRequest) -> ToolUse | None:
    """The offered functions (`tools`, or the deprecated `functions`) and how to use them."""
    legacy = req.tools is None
    entries = req.functions if legacy else req.tools
    if not entries:
        return None
    field = "functions" if legacy else "tools"
    tools = []
    for i, entry in enumerate(entries):
        fn = entry if legacy else entry["function"]
        where = f"{field}[{i}]" if legacy else f"{field}[{i}].function"
        tools.append(
            Tool(fn["name"], fn.get("description") or "", fn.get("parameters"), param=where)
        )
    parallel = False if legacy else req.parallel_tool_calls is not False
    return ToolUse(tuple(tools), req.tool_choice_name(), parallel, legacy)


def output_format(req: ChatCompletionRequest) -> OutputFormat | None:
    rf = req.response_format
    kind = None if rf is None else rf.get("type")
    if rf is None or kind not in ("json_object", "json_schema"):
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    spec = rf["json_schema"]
    schema = spec.get("schema", {"type": "object"})
    return OutputFormat("json_schema", schema, spec["name"])


def features(req: ChatCompletionRequest) -> Features:
    """What the request asks beyond text, for a backend that may not do it."""
    if _plain(req):
        return PLAIN
    function_role = next((i for i, m in enumerate(req.messages) if m.role == "function"), None)
    non_text = None
    for i, msg in enumerate(req.messages):
        parts = msg.content if isinstance(msg.content, list) else ()
        j = next((j for j, p in enumerate(parts) if p.type not in ("text", "refusal")), None)
        if j is not None:
            non_text = (i, j, parts[j].type)
            break
    tool_choice, function_call, rf = req.tool_choice, req.function_call, req.response_format
    return Features(
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs,
        tools=bool(req.tools),
        tool_choice=tool_choice if isinstance(tool_choice, str | None) else "named",
        functions=bool(req.functions),
        function_call=function_call if isinstance(function_call, str | None) else "named",
        response_format=None if rf is None else str(rf.get("type")),
        output_audio=req.audio is not None,
        modalities=None if req.modalities is None else tuple(req.modalities),
        prediction=req.prediction is not None,
        function_role=function_role,
        non_text_part=non_text,
    )


def _plain(req: ChatCompletionRequest) -> bool:
    """Text only (the common case, checked cheaply)."""
    extras = (req.logprobs, req.top_logprobs, req.tools, req.tool_choice, req.functions)
    more = (req.function_call, req.response_format, req.audio, req.modalities, req.prediction)
    if any(x is not None for x in extras) or any(x is not None for x in more):
        return False
    return all(isinstance(m.content, str | None) and m.role != "function" for m in req.messages)


class ChatWire:
    prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return self._chunk(
            stamp, delta_choice(index, {"role": "assistant", "content": ""}), with_usage
        )

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        if not isinstance(event, Delta):
            choice = delta_choice(event.index, {}, event.reason)
            if event.extra:  # an upstream's fields beside finish_reason, as it sent them
                choice.update(event.extra)
            return self._chunk(stamp, choice, with_usage)
        delta: dict[str, Any] = {"content": event.text}
        if event.extra:  # an upstream's audio, annotations, reasoning …, as it sent them
            delta.update(event.extra)
        if event.tool_calls:
            delta["tool_calls"] = list(event.tool_calls)
            delta["content"] = event.text or None
        if event.function_call:
            delta["function_call"] = event.function_call
            delta["content"] = event.text or None
        if event.refusal:
            delta["refusal"] = event.refusal
        choice = delta_choice(event.index, delta, None, event.logprobs)
        return self._chunk(stamp, choice, with_usage)

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        choices = [_message_choice(i, c) for i, c in enumerate(answer.choices)]
        return response_body("chat.completion", **stamped(stamp), choices=choices, usage=usage)

    def _chunk(self, stamp: Stamp, choice: dict[str, Any], with_usage: bool) -> dict[str, Any]:
        usage: Any = None if with_usage else NO_USAGE
        return response_body(self.chunk_object, **stamped(stamp), choices=[choice], usage=usage)


def _message_choice(index: int, c: Choice) -> dict[str, Any]:
    """One choice of a whole answer, with the fields an upstream sent beyond the typed ones
    (the message's `audio`, `annotations`, reasoning …; the choice's `stop_reason` …)."""
    choice = message_choice(
        index,
        c.text,
        c.finish_reason,
        tool_calls=c.tool_calls,
        logprobs=c.logprobs,
        refusal=c.refusal,
        function_call=c.function_call,
    )
    if c.extra:
        choice["message"].update(c.extra)
    if c.finish_extra:
        choice.update(c.finish_extra)
    return choice


chat_completions = endpoint(ChatCompletionRequest, inference_request, ChatWire(), keep=keeping)
routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
