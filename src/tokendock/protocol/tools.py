"""Chat completions' tool fields: `tools` / `tool_choice` / `parallel_tool_calls`, the
deprecated `functions` / `function_call`, assistant `tool_calls` in the history, and
`response_format` — checked once (a 400 naming the field), read as plain data afterwards."""

from __future__ import annotations

import re
from typing import Any

import orjson

from tokendock.errors import InvalidRequest

MAX_TOOLS = 128
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Prompt bytes the tool instructions add around the tools' own JSON (protocol/bounds.py).
TOOL_PROMPT_BYTES = 1024
CALL_PROMPT_BYTES = 64


def check_functions(tools: list[Any] | None, functions: list[Any] | None) -> list[str]:
    """The offered functions' names (from `tools` or the deprecated `functions`)."""
    if tools is not None and functions is not None:
        raise InvalidRequest(
            "Send either 'tools' or the deprecated 'functions', not both.", param="functions"
        )
    entries = tools if tools is not None else functions
    field = "tools" if tools is not None else "functions"
    if entries is None:
        return []
    if len(entries) > MAX_TOOLS:
        raise InvalidRequest(
            f"Invalid '{field}': at most {MAX_TOOLS} functions are allowed.", param=field
        )
    names: list[str] = []
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]"
        if tools is not None:
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise InvalidRequest(
                    f"Invalid '{where}.type': only 'function' tools are supported.",
                    param=f"{where}.type",
                )
            entry = entry.get("function")
            where += ".function"
            if not isinstance(entry, dict):
                raise InvalidRequest(f"Missing required parameter: '{where}'.", param=where)
        names.append(_check_function(entry, where))
    if len(set(names)) != len(names):
        raise InvalidRequest(f"Invalid '{field}': function names must be unique.", param=field)
    return names


def _check_function(fn: Any, where: str) -> str:
    if not isinstance(fn, dict) or "name" not in fn:
        raise InvalidRequest(f"Missing required parameter: '{where}.name'.", param=f"{where}.name")
    name = fn["name"]
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(
            f"Invalid '{where}.name': expected 1 to 64 letters, digits, '_' or '-'.",
            param=f"{where}.name",
        )
    if not isinstance(fn.get("description", ""), str):
        raise InvalidRequest(
            f"Invalid '{where}.description': expected a string.", param=f"{where}.description"
        )
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidRequest(
            f"Invalid '{where}.parameters': expected a JSON schema object.",
            param=f"{where}.parameters",
        )
    return name


def check_choice(choice: Any, names: list[str], *, legacy: bool) -> str | None:
    """The choice as a plain string: "none" / "auto" / "required", or the function's name."""
    field = "function_call" if legacy else "tool_choice"
    if choice is None:
        return None
    if not names and choice in ("none", "auto"):
        return str(choice)
    if not names:
        raise InvalidRequest(
            f"'{field}' is only allowed when '{'functions' if legacy else 'tools'}' are given.",
            param=field,
        )
    allowed = ("none", "auto") if legacy else ("none", "auto", "required")
    if isinstance(choice, str):
        if choice not in allowed:
            raise InvalidRequest(
                f"Invalid '{field}': expected one of {', '.join(allowed)} or a function.",
                param=field,
            )
        return str(choice)
    fn = (
        choice if legacy else (choice.get("function") if choice.get("type") == "function" else None)
    )
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        where = f"{field}.name" if legacy else f"{field}.function.name"
        raise InvalidRequest(f"Missing required parameter: '{where}'.", param=where)
    if name not in names:
        raise InvalidRequest(
            f"Invalid '{field}': no function named '{name}' was offered.", param=field
        )
    return name


def check_response_format(fmt: dict[str, Any] | None) -> None:
    if fmt is None or fmt.get("type") != "json_schema":
        return
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(
            "Invalid 'response_format.json_schema.name': expected 1 to 64 letters, digits, "
            "'_' or '-'.",
            param="response_format.json_schema.name",
        )
    if "schema" in spec and not isinstance(spec["schema"], dict | bool):
        raise InvalidRequest(
            "Invalid 'response_format.json_schema.schema': expected a JSON schema object.",
            param="response_format.json_schema.schema",
        )


def check_call(call: Any, where: str) -> None:
    """One assistant `tool_calls` entry in the history."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise InvalidRequest(
            f"Missing required parameter: '{where}.function.name'.", param=f"{where}.function.name"
        )
    if not isinstance(call.get("id"), str):
        raise InvalidRequest(f"Missing required parameter: '{where}.id'.", param=f"{where}.id")
    if not isinstance(fn.get("arguments", ""), str):
        raise InvalidRequest(
            f"Invalid '{where}.function.arguments': expected a string of JSON.",
            param=f"{where}.function.arguments",
        )


def json_bytes(value: Any) -> int:
    return len(orjson.dumps(value)) if value is not None else 0
