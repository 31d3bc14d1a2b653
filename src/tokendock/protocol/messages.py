"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API): the request
schema, the response and stream event shapes, and Anthropic's error envelope.

Shapes follow the official `anthropic` SDK's types: a message body
`{"id": "msg_…", "type": "message", "role": "assistant", "model", "content": [blocks],
"stop_reason", "stop_sequence", "usage": {"input_tokens", "cache_creation_input_tokens",
"cache_read_input_tokens", "output_tokens"}}`, stream events as
named server-sent events (`event: <type>` + `data: {"type": <type>, …}`), and errors as
`{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tokendock.errors import InvalidRequest, TokenDockError
from tokendock.protocol.bounds import (
    MAX_CONTENT_PARTS,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_PROMPT,
    ModelField,
    NameField,
    StopText,
    UserField,
    utf8_len,
)
from tokendock.protocol.tools import CALL_PROMPT_BYTES, MAX_TOOLS, NAME, TOOL_PROMPT_BYTES

MAX_STOP_SEQUENCES = 16


class _Block(BaseModel):
    # Unknown fields (cache_control, citations) are accepted and ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class MessageTextBlock(_Block):
    type: Literal["text"]
    text: str


class MessageToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: NameField
    name: NameField
    input: dict[str, Any]


class MessageToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: NameField
    content: str | Annotated[list[MessageTextBlock], Field(max_length=MAX_CONTENT_PARTS)] | None = (
        None
    )
    is_error: bool | None = None

    def text(self) -> str:
        body = self.content if isinstance(self.content, str) else _joined(self.content or [])
        return f"Error: {body}" if self.is_error else body


Block = Annotated[
    MessageTextBlock | MessageToolUseBlock | MessageToolResultBlock, Field(discriminator="type")
]


class MessageParam(_Block):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(max_length=MAX_CONTENT_PARTS)]

    def blocks(self) -> list[MessageTextBlock | MessageToolUseBlock | MessageToolResultBlock]:
        if isinstance(self.content, str):
            return [MessageTextBlock(type="text", text=self.content)]
        return list(self.content)


class MessageTool(_Block):
    name: Annotated[str, Field(pattern=NAME.pattern)]
    description: str | None = None
    input_schema: dict[str, Any]
    type: str | None = None  # "custom" or absent; server tools have no input_schema


class MessageToolChoice(_Block):
    type: Literal["auto", "any", "tool", "none"]
    name: NameField | None = None
    disable_parallel_tool_use: bool | None = None


class MessageMetadata(_Block):
    user_id: UserField | None = None


class MessagesInput(_Block):
    """What count_tokens reads: the conversation as the model would see it."""

    list_bounds: ClassVar[dict[str, int]] = {"messages": MAX_MESSAGES}

    model: ModelField
    messages: Annotated[list[MessageParam], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: str | Annotated[list[MessageTextBlock], Field(max_length=MAX_CONTENT_PARTS)] | None = (
        None
    )
    tools: Annotated[list[MessageTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: MessageToolChoice | None = None

    def system_text(self) -> str:
        if self.system is None:
            return ""
        return self.system if isinstance(self.system, str) else _joined(self.system)

    def tool_choice_name(self) -> str:
        """As the pipeline's ToolUse.choice: "auto", "required", "none" or a tool's name."""
        choice = self.tool_choice
        if choice is None or choice.type == "auto":
            return "auto"
        if choice.type == "any":
            return "required"
        if choice.type == "none":
            return "none"
        return str(choice.name)

    def check(self) -> None:
        names = [t.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise InvalidRequest("tools: tool names must be unique.", param="tools")
        choice = self.tool_choice
        if choice is not None and choice.type in ("any", "tool") and not names:
            raise InvalidRequest(
                f"tool_choice: '{choice.type}' is only allowed when tools are given.",
                param="tool_choice",
            )
        if choice is not None and choice.type == "tool":
            if choice.name is None:
                raise InvalidRequest("tool_choice.name: Field required", param="tool_choice.name")
            if choice.name not in names:
                raise InvalidRequest(
                    f"tool_choice.name: no tool named '{choice.name}' was offered.",
                    param="tool_choice.name",
                )
        self._check_messages()

    def _check_messages(self) -> None:
        chars = len(self.system_text())
        for i, msg in enumerate(self.messages):
            for j, block in enumerate(msg.blocks()):
                where = f"messages.{i}.content.{j}"
                if isinstance(block, MessageToolUseBlock) and msg.role != "assistant":
                    raise InvalidRequest(
                        f"{where}: 'tool_use' blocks belong in assistant messages.", param=where
                    )
                if isinstance(block, MessageToolResultBlock) and msg.role != "user":
                    raise InvalidRequest(
                        f"{where}: 'tool_result' blocks belong in user messages.", param=where
                    )
                chars += _chars(block)
        if chars > MAX_TEXT_CHARS:
            raise InvalidRequest(
                f"messages: their content has {chars} characters in all; at most "
                f"{MAX_TEXT_CHARS} are allowed.",
                param="messages",
            )

    def prompt_bound(self) -> int:
        """An upper bound on the prompt's tokens from bytes alone (protocol/bounds.py)."""
        total = TEMPLATE_TOKENS_PER_PROMPT + TEMPLATE_TOKENS_PER_MESSAGE
        total += utf8_len(self.system_text())
        for msg in self.messages:
            for block in msg.blocks():
                total += TEMPLATE_TOKENS_PER_MESSAGE
                if isinstance(block, MessageToolUseBlock):
                    total += CALL_PROMPT_BYTES + len(orjson.dumps(block.input)) + len(block.name)
                elif isinstance(block, MessageToolResultBlock):
                    total += utf8_len(block.text()) + CALL_PROMPT_BYTES
                else:
                    total += utf8_len(block.text)
        if self.tools:
            total += TOOL_PROMPT_BYTES
            total += sum(len(orjson.dumps(t.model_dump(exclude_none=True))) for t in self.tools)
        return total


class MessagesRequest(MessagesInput):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: (
        Annotated[list[Annotated[StopText, Field(min_length=1)]], Field(max_length=16)] | None
    ) = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None  # the sampler's C int
    metadata: MessageMetadata | None = None
    stream: bool | None = None


def _joined(blocks: list[MessageTextBlock]) -> str:
    return "\n".join(b.text for b in blocks)


def _chars(block: MessageTextBlock | MessageToolUseBlock | MessageToolResultBlock) -> int:
    if isinstance(block, MessageTextBlock):
        return len(block.text)
    if isinstance(block, MessageToolResultBlock):
        return len(block.text())
    return 0


# -- responses ----------------------------------------------------------------------------------

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish: str) -> str:
    """Anthropic's stop_reason for the pipeline's finish reason. The pipeline does not say
    whether a "stop" was the model's end of turn or one of `stop_sequences`: "end_turn"."""
    return STOP_REASONS.get(finish, "end_turn")


def usage(prompt_tokens: int, output_tokens: int, cached: int = 0) -> dict[str, Any]:
    """Anthropic's usage object for a prompt of `prompt_tokens`, `cached` of them read from the
    prefix cache. As Anthropic counts: `input_tokens` are the prompt tokens NOT read from cache
    (input + cache_read + cache_creation is the whole prompt); nothing is written to a cache on
    request (TokenDock's prefix cache fills itself), so cache_creation_input_tokens is 0."""
    return {
        "input_tokens": prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    }


def message_body(
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    reason: str | None,
    input_tokens: int,
    output_tokens: int,
    stop_sequence: str | None = None,
    cached: int = 0,
) -> dict[str, Any]:
    """`input_tokens`: the whole prompt's tokens, `cached` of them read from cache (`usage`)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": usage(input_tokens, output_tokens, cached),
    }


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments (JSON text) as the tool_use block's `input` object."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_use_id(call_id: str) -> str:
    """`toolu_…` for a call id the backend made (`call_…`); a client's own id is kept."""
    if call_id.startswith("toolu_"):
        return call_id
    return "toolu_" + call_id.removeprefix("call_")


def sse(body: dict[str, Any]) -> bytes:
    """One named server-sent event: `event: <type>` then its JSON."""
    name: str = body["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


PING = sse({"type": "ping"})


# -- errors -------------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED = 529  # Anthropic's status for "try again later" (TokenDock's 503s)


def error_status(err: TokenDockError) -> int:
    return OVERLOADED if err.status == 503 else err.status


def error_envelope(err: TokenDockError) -> dict[str, Any]:
    status = error_status(err)
    kind = ERROR_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": err.message}}
