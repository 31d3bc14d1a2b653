"""POST /v1/responses (and /v1/responses/input_tokens): the request schema, its checks (a 400
naming the field, as `input[2].content[0].type`) and its input as stored items.

Input items, as stored and listed (`GET /v1/responses/{id}/input_items`):

    {"id": "msg_…", "type": "message", "role": "user", "status": "completed",
     "content": [{"type": "input_text", "text": "…"}]}            (assistant: output_text parts)
    {"id": "fc_…", "type": "function_call", "call_id", "name", "arguments", "status"}
    {"id": "fco_…", "type": "function_call_output", "call_id", "output", "status"}
    {"id": "cmp_…", "type": "compaction", "encrypted_content": "…"}   (POST /v1/responses/compact)

A compaction item is kept as given; what it says is read only once its seal is checked
(services/compaction.py), before the prompt is built.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokendock.errors import InvalidRequest
from tokendock.protocol.bounds import (
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_PROMPT,
    ModelField,
    UserField,
    utf8_len,
)
from tokendock.protocol.common import Temperature, TopP
from tokendock.protocol.response_shapes import JSON, new_id
from tokendock.protocol.stored import MAX_ID_CHARS, Metadata, is_object_id, storable_text
from tokendock.protocol.tools import (
    CALL_PROMPT_BYTES,
    MAX_TOOLS,
    NAME,
    TOOL_PROMPT_BYTES,
    json_bytes,
)

MAX_OUTPUT_TOKENS = 2**31 - 1  # far above any model's cap; JSON-safe (the upstream body)
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "refusal")

FORMAT_KEYS = ("type", "name", "schema", "strict", "description")  # what `text.format` keeps


class ResponseRequest(BaseModel):
    """Unknown fields are accepted and ignored (`include`, `reasoning`, `service_tier`, …)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    list_bounds: ClassVar[dict[str, int]] = {"input": MAX_MESSAGES, "tools": MAX_TOOLS}

    model: ModelField
    input: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    # Any string: one that is not a response id is not found (404), never looked up.
    previous_response_id: str | None = None
    # A conversation id (`conv_…`) or {"id": …}: its items are the input's prefix, and this
    # response's input and output are appended to it (services/conversations.py).
    conversation: str | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: UserField | None = None
    stream: bool | None = None
    background: bool | None = None

    def check(self) -> None:
        conversation = self.conversation_id()
        if conversation is not None and self.previous_response_id is not None:
            raise InvalidRequest(
                "'conversation' cannot be used together with 'previous_response_id'.",
                param="conversation",
            )
        if self.input is None and self.previous_response_id is None and conversation is None:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input")
        self.tool_names()
        self.choice()
        self.text_format()
        if self.background and self.store is False:
            raise InvalidRequest(
                "A background response must be stored: 'store' cannot be false.", param="store"
            )
        if self.background and self.stream:
            raise InvalidRequest(
                "Streaming a background response is not supported: send 'stream' or "
                "'background', not both.",
                param="stream",
            )

    def conversation_id(self) -> str | None:
        """The conversation's id, from `"conv_…"` or `{"id": "conv_…"}`; any other shape is a
        400 naming `conversation` (an id that names nothing is a 404 later)."""
        given = self.conversation
        if isinstance(given, dict):
            given = given.get("id")
        if given is None and self.conversation is None:
            return None
        if not isinstance(given, str):
            raise InvalidRequest(
                "Invalid 'conversation': expected a conversation id or an object with 'id'.",
                param="conversation",
            )
        return given

    def tool_names(self) -> list[str]:
        names: list[str] = []
        for i, tool in enumerate(self.tools or ()):
            where = f"tools[{i}]"
            if tool.get("type") != "function":
                raise InvalidRequest(
                    f"Invalid '{where}.type': only 'function' tools are supported.",
                    param=f"{where}.type",
                )
            name = tool.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                raise InvalidRequest(
                    f"Invalid '{where}.name': expected 1 to 64 letters, digits, '_' or '-'.",
                    param=f"{where}.name",
                )
            for key, kind, what in (
                ("description", str, "a string"),
                ("parameters", dict, "a JSON schema object"),
                ("strict", bool, "a boolean"),
            ):
                if tool.get(key) is not None and not isinstance(tool[key], kind):
                    raise InvalidRequest(
                        f"Invalid '{where}.{key}': expected {what}.", param=f"{where}.{key}"
                    )
            names.append(name)
        if len(set(names)) != len(names):
            raise InvalidRequest("Invalid 'tools': function names must be unique.", param="tools")
        return names

    def choice(self) -> str:
        """How tools may be used: "none" / "auto" / "required", or the function's name."""
        choice, names = self.tool_choice, self.tool_names()
        if choice is None:
            return "auto"
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise InvalidRequest(
                    "Invalid 'tool_choice': expected 'none', 'auto', 'required' or a function.",
                    param="tool_choice",
                )
            if choice == "required" and not names:
                raise InvalidRequest("'tool_choice' 'required' needs 'tools'.", param="tool_choice")
            return choice
        if choice.get("type") != "function":
            raise InvalidRequest(
                "Invalid 'tool_choice.type': only 'function' is supported.",
                param="tool_choice.type",
            )
        name = choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(
                "Missing required parameter: 'tool_choice.name'.", param="tool_choice.name"
            )
        if name not in names:
            raise InvalidRequest(
                f"Invalid 'tool_choice': no function named '{name}' was offered.",
                param="tool_choice.name",
            )
        return name

    def text_format(self) -> JSON:
        """`text.format`: {"type": "text"} (the default), json_object, or json_schema — only
        the fields the API defines (the response stores and echoes it: nothing else is kept)."""
        fmt = (self.text or {}).get("format")
        if fmt is None:
            return {"type": "text"}
        if not isinstance(fmt, dict) or fmt.get("type") not in (
            "text",
            "json_object",
            "json_schema",
        ):
            raise InvalidRequest(
                "Invalid 'text.format.type': expected 'text', 'json_object' or 'json_schema'.",
                param="text.format.type",
            )
        if fmt["type"] == "json_schema":
            name = fmt.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                raise InvalidRequest(
                    "Invalid 'text.format.name': expected 1 to 64 letters, digits, '_' or '-'.",
                    param="text.format.name",
                )
            if not isinstance(fmt.get("schema"), dict):
                raise InvalidRequest(
                    "Invalid 'text.format.schema': expected a JSON schema object.",
                    param="text.format.schema",
                )
            return {k: fmt[k] for k in FORMAT_KEYS if fmt.get(k) is not None}
        return {"type": fmt["type"]}

    def tools_echoed(self) -> list[JSON]:
        return [
            {
                "type": "function",
                "name": t["name"],
                "description": t.get("description"),
                "parameters": t.get("parameters"),
                "strict": t.get("strict", True),
            }
            for t in self.tools or ()
        ]


def input_items(value: str | list[dict[str, Any]] | None) -> list[JSON]:
    """The request's `input` as stored items (each with an id); a 400 naming what is wrong."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    items = [_item(item, f"input[{i}]") for i, item in enumerate(value)]
    chars = sum(utf8_len(item_text(item)) for item in items)
    if chars > MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"Invalid 'input': its text has {chars} bytes in all; at most {MAX_TEXT_CHARS} are "
            "allowed.",
            param="input",
        )
    return items


def _message(role: str, content: list[JSON]) -> JSON:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _string(item: JSON, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Missing required parameter: '{where}.{key}' (a string).", param=f"{where}.{key}"
        )
    return value


def _item(item: JSON, where: str) -> JSON:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"Invalid '{where}.role': expected one of {', '.join(ROLES)}.",
                param=f"{where}.role",
            )
        return _message(str(role), _parts(item.get("content"), str(role), f"{where}.content"))
    if kind == "function_call":
        return {
            "id": _item_id(item, where, "fc"),
            "type": "function_call",
            "call_id": _call_id(item, where),
            "name": _string(item, "name", where),
            "arguments": _string(item, "arguments", where),
            "status": "completed",
        }
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(p["text"] for p in _parts(output, "user", f"{where}.output"))
        if not isinstance(output, str):
            raise InvalidRequest(
                f"Missing required parameter: '{where}.output' (a string).",
                param=f"{where}.output",
            )
        return {
            "id": _item_id(item, where, "fco"),
            "type": "function_call_output",
            "call_id": _call_id(item, where),
            "output": output,
            "status": "completed",
        }
    if kind == "compaction":
        return {
            "id": _item_id(item, where, "cmp"),
            "type": "compaction",
            "encrypted_content": _string(item, "encrypted_content", where),
        }
    raise InvalidRequest(
        f"Invalid '{where}.type': expected 'message', 'function_call', 'function_call_output' "
        "or 'compaction'.",
        param=f"{where}.type",
    )


def _item_id(item: JSON, where: str, prefix: str) -> str:
    """The client's id of an item it sends back (a stored id: at most 64 characters of
    letters, digits, '_' and '-'), or a new one."""
    given = item.get("id")
    if given is None:
        return new_id(prefix)
    if not isinstance(given, str) or not is_object_id(given):
        raise InvalidRequest(
            f"Invalid '{where}.id': expected 1 to {MAX_ID_CHARS} letters, digits, '_' or '-'.",
            param=f"{where}.id",
        )
    return given


def _call_id(item: JSON, where: str) -> str:
    """A tool call's id, as the model (or an upstream) made it: bounded, storable."""
    call_id = _string(item, "call_id", where)
    if not 1 <= len(call_id) <= MAX_ID_CHARS or not storable_text(call_id):
        raise InvalidRequest(
            f"Invalid '{where}.call_id': expected 1 to {MAX_ID_CHARS} characters.",
            param=f"{where}.call_id",
        )
    return call_id


def _parts(content: Any, role: str, where: str) -> list[JSON]:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: JSON = {"type": kind, "text": content}
        return [part | {"annotations": []} if kind == "output_text" else part]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Missing required parameter: '{where}' (a string or a list of parts).", param=where
        )
    parts: list[JSON] = []
    for j, given in enumerate(content):
        at = f"{where}[{j}]"
        ptype = given.get("type") if isinstance(given, dict) else None
        if ptype not in TEXT_PARTS:
            raise InvalidRequest(
                f"Invalid '{at}.type': only text parts ('input_text', 'output_text') are "
                "supported.",
                param=f"{at}.type",
            )
        key = "refusal" if ptype == "refusal" else "text"
        text = _string(given, key, at)
        parts.append(
            {"type": kind, "text": text} | ({"annotations": []} if kind == "output_text" else {})
        )
    return parts


def item_text(item: JSON) -> str:
    """The text an item puts in the prompt."""
    kind = item["type"]
    if kind == "message":
        return "".join(p["text"] for p in item["content"])
    if kind == "function_call":
        return str(item["name"]) + str(item["arguments"])
    if kind == "compaction":  # its sealed text is longer than the summary it holds: a bound
        return str(item["encrypted_content"])
    return str(item.get("output", ""))


def prompt_bound(instructions: str | None, items: list[JSON], tools: Any) -> int:
    """An upper bound on the prompt's tokens from bytes alone (protocol/bounds.py)."""
    total = TEMPLATE_TOKENS_PER_PROMPT
    if instructions:
        total += TEMPLATE_TOKENS_PER_MESSAGE + utf8_len(instructions)
    for item in items:
        total += TEMPLATE_TOKENS_PER_MESSAGE + utf8_len(item_text(item))
        if item["type"] == "function_call":
            total += CALL_PROMPT_BYTES
    if tools:
        total += TOOL_PROMPT_BYTES + json_bytes(tools)
    return total


def item_bound(item: JSON) -> int:
    """One item's share of `prompt_bound` (for truncation)."""
    extra = CALL_PROMPT_BYTES if item["type"] == "function_call" else 0
    return TEMPLATE_TOKENS_PER_MESSAGE + utf8_len(item_text(item)) + extra


class InputTokensRequest(ResponseRequest):
    """POST /v1/responses/input_tokens: the same fields (`input` may be left out: the
    instructions and tools alone are counted); nothing is generated or stored."""

    def check(self) -> None:
        self.tool_names()
        self.choice()
        self.text_format()


class CompactRequest(BaseModel):
    """POST /v1/responses/compact: the conversation (`input`, after `previous_response_id`'s
    history) to compact. Unknown fields are accepted and ignored (`prompt_cache_key`, …)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    list_bounds: ClassVar[dict[str, int]] = {"input": MAX_MESSAGES}

    model: ModelField
    input: str | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    # TokenDock's: the summary's tokens at most (default and most: SUMMARY_TOKENS).
    max_output_tokens: int | None = Field(None, ge=1)

    def check(self) -> None:
        if self.input is None and self.previous_response_id is None:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input")
