"""The OpenAI error envelope, and pydantic validation errors turned into it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tokendock.errors import InvalidRequest, TokenDockError


def envelope(err: TokenDockError) -> dict[str, Any]:
    return {
        "error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    }


def param_path(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'content') -> 'messages[0].content' (OpenAI's spelling)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic appends the union member it tried ("str", "list[str]", "function-after[...]");
    # those are not request fields.
    kept: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in _UNION_TAGS):
            break
        kept.append(part)
    return tuple(kept)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """Report the first error, naming the field as OpenAI does."""
    first = exc.errors(include_url=False)[0]
    loc = _clean_loc(tuple(first["loc"]))
    param = param_path(loc) or None
    kind = first["type"]
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    msg = str(first["msg"]).removeprefix("Value error, ")
    got = first.get("input")
    detail = msg[0].lower() + msg[1:] if msg else "invalid value"
    if kind.endswith("_type") or kind in ("literal_error", "union_tag_invalid"):
        return InvalidRequest(
            f"Invalid type for '{param}': {detail} (got {_describe(got)}).", param=param
        )
    return InvalidRequest(f"Invalid value for '{param}': {detail}.", param=param)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
