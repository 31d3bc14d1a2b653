"""POST /v1/chat/completions: the request schema and the response / chunk shapes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokendock.errors import InvalidRequest
from tokendock.protocol.bounds import (
    MAX_CONTENT_PARTS,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_PROMPT,
    NameField,
    utf8_len,
)
from tokendock.protocol.common import SamplingFields
from tokendock.protocol.stored import Metadata
from tokendock.protocol.tools import (
    CALL_PROMPT_BYTES,
    TOOL_PROMPT_BYTES,
    check_call,
    check_choice,
    check_functions,
    check_response_format,
    json_bytes,
)


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_parts_have_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a 'text' content part needs a 'text' string")
        return self


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None
    name: NameField | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: NameField | None = None


class ChatCompletionRequest(SamplingFields):
    list_bounds: ClassVar[dict[str, int]] = {"messages": MAX_MESSAGES}

    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    store: bool | None = None  # keep the request and answer (protocol/stored.py)
    metadata: Metadata | None = None  # kept with a stored completion

    def token_limit(self) -> int | None:
        """`max_completion_tokens` wins over the older `max_tokens` when both are sent."""
        return self.max_completion_tokens if self.max_completion_tokens else self.max_tokens

    def check(self) -> None:
        """Is the request well formed? (What a backend cannot do is the backend's to refuse:
        see `features()`.)"""
        self.check_common()
        if self.top_logprobs is not None and self.logprobs is not True:
            raise InvalidRequest(
                "'top_logprobs' is only allowed when 'logprobs' is true.", param="top_logprobs"
            )
        kind = None if self.response_format is None else self.response_format.get("type")
        if kind not in (None, "text", "json_object", "json_schema"):
            raise InvalidRequest(
                "Invalid 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
                param="response_format.type",
            )
        check_response_format(self.response_format)
        names = check_functions(self.tools, self.functions)
        check_choice(self.tool_choice, names if self.tools is not None else [], legacy=False)
        check_choice(self.function_call, names if self.functions is not None else [], legacy=True)
        self._check_messages()

    def tool_choice_name(self) -> str:
        """How tools may be used, as one string: "none" / "auto" / "required" / a name."""
        choice = self.tool_choice if self.tools is not None else self.function_call
        if choice is None:
            return "auto"
        if isinstance(choice, str):
            return choice
        fn = choice.get("function", choice) if self.tools is not None else choice
        return str(fn["name"])

    def prompt_bound(self) -> int:
        """An upper bound on the prompt's tokens, from bytes alone (no tokenizer): see
        protocol/bounds.py."""
        total = TEMPLATE_TOKENS_PER_PROMPT
        for msg in self.messages:
            total += TEMPLATE_TOKENS_PER_MESSAGE + utf8_len(message_text(msg))
            for call in msg.tool_calls or ():
                total += CALL_PROMPT_BYTES + json_bytes(call)
        if self.tools or self.functions:
            total += TOOL_PROMPT_BYTES + json_bytes(self.tools) + json_bytes(self.functions)
        return total

    def _check_messages(self) -> None:
        chars = 0
        called: set[str] = set()  # ids of the tool calls made so far
        for i, msg in enumerate(self.messages):
            where = f"messages[{i}]"
            for j, call in enumerate(msg.tool_calls or ()):
                check_call(call, f"{where}.tool_calls[{j}]")
                called.add(call["id"])
            if msg.role == "tool" and msg.tool_call_id and msg.tool_call_id not in called:
                raise InvalidRequest(
                    f"Invalid '{where}.tool_call_id': a 'tool' message must answer a tool call "
                    "made by an earlier assistant message; no call has id "
                    f"'{msg.tool_call_id}'.",
                    param=f"{where}.tool_call_id",
                )
            if msg.role == "tool" and not msg.tool_call_id:
                raise InvalidRequest(
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    param=f"{where}.tool_call_id",
                )
            if msg.content is None and not (msg.role == "assistant" and msg.tool_calls):
                raise InvalidRequest(
                    f"Missing required parameter: '{where}.content'.", param=f"{where}.content"
                )
            if isinstance(msg.content, str):
                chars += len(msg.content)
            elif isinstance(msg.content, list):
                chars += sum(len(part.text or "") for part in msg.content)
        if chars > MAX_TEXT_CHARS:
            raise InvalidRequest(
                f"Invalid 'messages': their content has {chars} characters in all; at most "
                f"{MAX_TEXT_CHARS} are allowed.",
                param="messages",
            )


def message_text(msg: Message) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    return "".join(part.text or "" for part in msg.content)


def message_choice(
    index: int,
    text: str,
    finish_reason: str,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: dict[str, Any] | None = None,
    refusal: str | None = None,
    function_call: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One choice of a whole chat completion. With tool calls, empty content is null."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
        message["content"] = text or None
    if function_call:
        message["function_call"] = function_call
        message["content"] = text or None
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def delta_choice(
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
