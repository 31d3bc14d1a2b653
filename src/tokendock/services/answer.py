"""A whole (non-streamed) answer assembled from a call's events: every choice's text, tool
calls, function call, logprobs, refusal and finish reason; an embedding request's vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tokendock.inference.backend import JSON, Chunk, Delta, Embedding, Output


@dataclass(slots=True)
class Choice:
    """One choice of a whole answer."""

    text: str = ""
    finish_reason: str = "stop"
    tool_calls: list[JSON] | None = None
    logprobs: JSON | None = None
    function_call: JSON | None = None
    refusal: str | None = None
    stop_sequence: str | None = None
    extra: JSON | None = None  # an upstream's other message fields (audio, annotations …)
    finish_extra: JSON | None = None  # and its choice's beside finish_reason (stop_reason …)


@dataclass(slots=True)
class Answer:
    choices: list[Choice] = field(default_factory=list)
    embeddings: list[Embedding] = field(default_factory=list)  # kind "embed": one per input

    def take(self, event: Output) -> None:
        """Add one event: its choice's text, tool calls, logprobs and finish reason."""
        if isinstance(event, Embedding):
            self.embeddings.append(event)
            return
        if isinstance(event, Chunk):  # an opaque answer's bytes: relayed, never assembled
            return
        choices = self.choices
        while len(choices) <= event.index:
            choices.append(Choice())
        choice = choices[event.index]
        if isinstance(event, Delta):
            choice.text += event.text
            if event.tool_calls:
                choice.tool_calls = _merge_calls(choice.tool_calls or [], event.tool_calls)
            if event.function_call:
                choice.function_call = _merge_function_call(
                    choice.function_call, event.function_call
                )
            if event.logprobs is not None:
                choice.logprobs = _merge_logprobs(choice.logprobs, event.logprobs)
            if event.refusal:
                choice.refusal = (choice.refusal or "") + event.refusal
            if event.extra:
                choice.extra = _merge_extra(choice.extra, event.extra)
        else:
            choice.finish_reason = event.reason
            choice.stop_sequence = event.stop_sequence
            choice.finish_extra = event.extra


def _merge_calls(have: list[JSON], more: Sequence[JSON]) -> list[JSON]:
    """Tool calls of one choice. A streamed call comes in pieces with an `index` (id and name
    first, then argument fragments): pieces of one index make one call, without the index."""
    calls = list(have)
    for piece in more:
        index = piece.get("index")
        if index is None:
            calls.append(dict(piece))
            continue
        if index < len(calls) and "id" not in piece:
            call = calls[index]
            fn = call.setdefault("function", {})
            more_args = (piece.get("function") or {}).get("arguments", "")
            fn["arguments"] = fn.get("arguments", "") + more_args
            continue
        call = {k: v for k, v in piece.items() if k != "index"}
        call["function"] = dict(call.get("function") or {})
        calls.append(call)
    return calls


def _merge_function_call(have: JSON | None, more: JSON) -> JSON:
    if have is None:
        return {"name": more.get("name"), "arguments": more.get("arguments", "")}
    return {**have, "arguments": have.get("arguments", "") + more.get("arguments", "")}


def _merge_logprobs(have: JSON | None, more: JSON) -> JSON:
    """Logprobs of one choice: lists (chat's `content`, text's `tokens` …) are concatenated."""
    if have is None:
        return dict(more)
    merged = dict(have)
    for name, value in more.items():
        if isinstance(value, list) and isinstance(merged.get(name), list):
            merged[name] = [*merged[name], *value]
        else:
            merged[name] = value
    return merged


def _merge_extra(have: JSON | None, more: JSON) -> JSON:
    """An upstream's untyped message fields: streamed text (reasoning_content …) and lists
    (annotations …) join up; any other value is the latest one sent."""
    if have is None:
        return dict(more)
    merged = dict(have)
    for name, value in more.items():
        old = merged.get(name)
        if isinstance(old, str) and isinstance(value, str):
            merged[name] = old + value
        elif isinstance(old, list) and isinstance(value, list):
            merged[name] = [*old, *value]
        else:
            merged[name] = value
    return merged
