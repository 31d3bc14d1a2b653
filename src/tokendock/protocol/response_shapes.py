"""The Responses API's response object, output items and streamed events (OpenAI's shapes, as
the official SDK's `openai.types.responses` read them).

`OutputBuilder` turns an answer's pieces — text, and tool-call pieces in chat completions'
form — into output items (`message` with one `output_text` part, `function_call`) and, for a
stream, the typed events that build them, each with its `sequence_number`:

    response.output_item.added → response.content_part.added → response.output_text.delta …
    → response.output_text.done → response.content_part.done → response.output_item.done
    response.output_item.added (function_call) → response.function_call_arguments.delta …
    → response.function_call_arguments.done → response.output_item.done
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


def new_id(prefix: str) -> str:
    """A stored object's id (`resp_…`, `msg_…`, `fc_…`): unguessable, as OpenAI's."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(slots=True)
class ResponseRecord:
    """One response as stored (storage/responses.py) and rendered (`response_object`).
    `request`: the parameters echoed in the object (instructions, tools, text, …);
    `context`: the conversation items before this response's own input (from its previous
    response); `created_at`: Unix seconds."""

    id: str
    account_id: int
    model: str
    created_at: int
    status: str = "in_progress"
    background: bool = False
    previous_response_id: str | None = None
    request: JSON = field(default_factory=dict)
    input_items: list[JSON] = field(default_factory=list)
    context: list[JSON] = field(default_factory=list)
    output: list[JSON] = field(default_factory=list)
    usage: JSON | None = None
    metadata: dict[str, str] | None = None
    error: JSON | None = None
    incomplete_reason: str | None = None

    def history(self) -> list[JSON]:
        """What a response continuing this one reads before its own input."""
        return [*self.context, *self.input_items, *self.output]


def response_usage(input_tokens: int, output_tokens: int, cached: int = 0) -> JSON:
    """The Responses API's usage object; `cached`: of the input tokens, those read from cache."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(rec: ResponseRecord) -> JSON:
    req = rec.request
    reason = rec.incomplete_reason
    return {
        "id": rec.id,
        "object": "response",
        "created_at": rec.created_at,
        "status": rec.status,
        "background": rec.background,
        "error": rec.error,
        "incomplete_details": None if reason is None else {"reason": reason},
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": rec.model,
        "output": rec.output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": rec.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0),
        "text": {"format": req.get("format", {"type": "text"})},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools", []),
        "top_p": req.get("top_p", 1.0),
        "truncation": req.get("truncation", "disabled"),
        "usage": rec.usage,
        "user": req.get("user"),
        "metadata": rec.metadata or {},
    }


def _text_part(text: str = "") -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class OutputBuilder:
    """The output items of one answer, built piece by piece; each method returns the stream
    events of what it did (a whole answer ignores them)."""

    def __init__(self) -> None:
        self.items: list[JSON] = []
        self.sequence = 0
        self._message: int | None = None  # position of the open message item
        self._call: int | None = None  # position of the open function call
        self._calls: dict[int, int] = {}  # a streamed call's `index` → its position

    def event(self, kind: str, **fields: Any) -> JSON:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return body

    def text(self, text: str) -> list[JSON]:
        if not text:
            return []
        events = [] if self._message is not None else self._open_message()
        assert self._message is not None
        item = self.items[self._message]
        item["content"][0]["text"] += text
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self._message,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def call(self, piece: JSON) -> list[JSON]:
        """A tool call, whole or a streamed piece (chat completions' form: `index`, `id`,
        `function.name`, `function.arguments`)."""
        index = piece.get("index")
        fn = piece.get("function") or {}
        arguments = fn.get("arguments") or ""
        events: list[JSON] = []
        at = None if index is None or "id" in piece else self._calls.get(index)
        if at is None:
            events += self._close_message("completed") + self._close_call("completed")
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": piece.get("id") or new_id("call"),
                "name": fn.get("name") or "",
                "arguments": "",
            }
            self.items.append(item)
            at = self._call = len(self.items) - 1
            if index is not None:
                self._calls[index] = at
            added = self.event(
                "response.output_item.added", output_index=at, item=copy.deepcopy(item)
            )
            events.append(added)
        item = self.items[at]
        if arguments:
            item["arguments"] += arguments
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=at,
                    delta=arguments,
                )
            )
        return events

    def finish(self, complete: bool) -> list[JSON]:
        """Close what is open; `complete` False: the answer was cut (max_output_tokens)."""
        status = "completed" if complete else "incomplete"
        events = []
        if not self.items:  # an empty answer is an empty message
            events += self._open_message()
        return events + self._close_message(status) + self._close_call(status)

    def _open_message(self) -> list[JSON]:
        item: JSON = {
            "id": new_id("msg"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.items.append(item)
        at = self._message = len(self.items) - 1
        events = [
            self.event("response.output_item.added", output_index=at, item=copy.deepcopy(item)),
            self.event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=at,
                content_index=0,
                part=_text_part(),
            ),
        ]
        item["content"].append(_text_part())
        return events

    def _close_message(self, status: str) -> list[JSON]:
        at, self._message = self._message, None
        if at is None:
            return []
        item = self.items[at]
        item["status"] = status
        part = item["content"][0]
        where = {"item_id": item["id"], "output_index": at, "content_index": 0}
        return [
            self.event("response.output_text.done", **where, text=part["text"], logprobs=[]),
            self.event("response.content_part.done", **where, part=copy.deepcopy(part)),
            self.event("response.output_item.done", output_index=at, item=copy.deepcopy(item)),
        ]

    def _close_call(self, status: str) -> list[JSON]:
        at, self._call = self._call, None
        if at is None:
            return []
        item = self.items[at]
        item["status"] = status
        return [
            self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=at,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=at, item=copy.deepcopy(item)),
        ]
