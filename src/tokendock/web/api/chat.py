"""POST /v1/chat/completions: the wire adapter — JSON body → `InferenceRequest`, events → chat
completion (chunk) bodies. Everything else is the pipeline's (web/api/respond.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.inference.backend import Delta, Event, Features, InferenceRequest, Passthrough
from tokendock.inference.base import ChatTurn
from tokendock.protocol.chat import ChatCompletionRequest, chunk_body, message_text
from tokendock.services.pipeline import Answer
from tokendock.web.api.respond import Stamp, serve
from tokendock.web.deps import current_key, parse_body, services_of


async def chat_completions(request: Request) -> Response:
    # A plain Starlette route: the hot path skips FastAPI's dependency solving.
    deps = services_of(request)
    key = await current_key(request)
    req = await parse_body(request, ChatCompletionRequest)
    req.check()
    body = await request.body()
    return await serve(request, deps, key, inference_request(req, body), CHAT)


def inference_request(req: ChatCompletionRequest, body: bytes) -> InferenceRequest:
    limit = req.token_limit()
    return InferenceRequest(
        kind="chat",
        model=req.model,
        turns=tuple(ChatTurn(m.role, message_text(m)) for m in req.messages),
        prompt_bytes=(req.prompt_bound(),),
        n=req.n or 1,
        max_tokens=limit,
        max_tokens_param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
        stop=req.stop_list(),
        temperature=req.temperature,
        top_p=req.top_p,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        seed=req.seed,
        logit_bias=req.logit_bias_ids(),
        user=req.user,
        stream=bool(req.stream),
        include_usage=req.include_usage(),
        features=features(req),
        payload=Passthrough(body),
    )


def features(req: ChatCompletionRequest) -> Features:
    function_role = next((i for i, m in enumerate(req.messages) if m.role == "function"), None)
    non_text = None
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, list):
            j = next(
                (j for j, p in enumerate(msg.content) if p.type not in ("text", "refusal")), None
            )
            if j is not None:
                non_text = (i, j, msg.content[j].type)
                break
    choice = req.tool_choice
    rf = req.response_format
    return Features(
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs,
        tools=bool(req.tools),
        tool_choice=choice if isinstance(choice, str) or choice is None else "named",
        functions=bool(req.functions),
        function_call=req.function_call if isinstance(req.function_call, str | None) else "named",
        response_format=None if rf is None else str(rf.get("type")),
        output_audio=req.audio is not None,
        modalities=None if req.modalities is None else tuple(req.modalities),
        prediction=req.prediction is not None,
        function_role=function_role,
        non_text_part=non_text,
    )


class ChatWire:
    prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return _chunk(stamp, index, {"role": "assistant", "content": ""}, None, None, with_usage)

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        if isinstance(event, Delta):
            delta: dict[str, Any] = {"content": event.text}
            if event.tool_calls:
                delta["tool_calls"] = list(event.tool_calls)
                if not event.text:
                    delta["content"] = None
            if event.refusal:
                delta["refusal"] = event.refusal
            return _chunk(stamp, event.index, delta, None, event.logprobs, with_usage)
        return _chunk(stamp, event.index, {}, event.reason, None, with_usage)

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for i, c in enumerate(answer.choices):
            message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": c.refusal}
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
                message["content"] = c.text or None
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish_reason,
                }
            )
        return {
            "id": stamp.id,
            "object": "chat.completion",
            "created": stamp.created,
            "model": stamp.model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage,
        }


def _chunk(
    stamp: Stamp,
    index: int,
    delta: dict[str, Any],
    finish: str | None,
    logprobs: dict[str, Any] | None,
    with_usage: bool,
) -> dict[str, Any]:
    body = chunk_body(
        request_id=stamp.id,
        created=stamp.created,
        model=stamp.model,
        index=index,
        delta=delta,
        finish_reason=finish,
        with_usage_field=with_usage,
    )
    if logprobs is not None:
        body["choices"][0]["logprobs"] = logprobs
    return body


CHAT = ChatWire()
routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
