"""What TokenDock reads from upstream JSON: the client's body as the upstream gets it (parsed once,
strictly, before admission), and — from answers and stream events — the usage, finish reason
and text seen, for billing. Upstreams are not trusted: a count that is not a sane integer or a
finish reason that is not a string is not believed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
MAX_COUNT = 2**31 - 1  # tokens an upstream may report for one request; more is not believed


@dataclass(slots=True)
class Seen:
    """What the relay saw of a stream: enough to bill it if no usage ever arrives."""

    usage: JSON | None = None
    pieces: int = 0
    chars: int = 0
    finish: str | None = None


def answer_seen(body: JSON) -> Seen:
    """What a whole (non-streamed) answer says: its usage, text length and finish reason."""
    seen = Seen(usage=usage_of(body.get("usage")))
    for choice in body.get("choices") or ():
        seen.chars += len(choice_text(choice))
        seen.finish = finish_of(choice) or seen.finish
    return seen


def observe(seen: Seen, item: JSON) -> bool:
    """Count one stream event into `seen`; False for an event without choices (usage only)."""
    usage = usage_of(item.get("usage"))
    if usage is not None:
        seen.usage = usage
    choices = item.get("choices")
    if not choices:
        return False
    for choice in choices:
        text = choice_text(choice)
        if text:
            seen.pieces += 1
            seen.chars += len(text)
        seen.finish = finish_of(choice) or seen.finish
    return True


def usage_of(value: object) -> JSON | None:
    if isinstance(value, dict) and is_count(value.get("completion_tokens")):
        return value
    return None


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def count(value: object) -> int:
    """A token count the upstream reported; anything but a sane count is 0."""
    return value if isinstance(value, int) and is_count(value) else 0


def cached_count(usage: JSON) -> int:
    """Of the prompt tokens, those the upstream read from its prefix cache, as vLLM, SGLang and
    llama.cpp's server report them (`usage.prompt_tokens_details.cached_tokens`); at most the
    prompt's count, 0 when not reported or not believed."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        return 0
    return min(count(details.get("cached_tokens")), count(usage.get("prompt_tokens")))


def finish_of(choice: JSON) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


# Where reasoning models put their thinking (vLLM / SGLang: `reasoning_content`; vLLM's newer
# and OpenRouter's `reasoning`): generated text too, counted when an estimate is needed.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def choice_text(choice: JSON) -> str:
    """The text a choice generated (content, reasoning, call arguments): what an estimate of its
    tokens counts when the upstream reports no usage."""
    message = choice.get("delta") or choice.get("message")
    if isinstance(message, dict):
        text = message.get("content") or ""
        if not isinstance(text, str):
            return ""
        for name in REASONING_FIELDS:
            thought = message.get(name)
            if isinstance(thought, str):
                text += thought
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            fn = call.get("function") if isinstance(call, dict) else None
            text += str(fn.get("arguments") or "") if isinstance(fn, dict) else ""
        return text
    text = choice.get("text")
    return text if isinstance(text, str) else ""
