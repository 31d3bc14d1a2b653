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
    # pydantic inserts the union member it tried ("str", "list[str]", "constrained-int");
    # those are not request fields. Field names never contain "[" or "-".
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or "-" in p or p in _UNION_TAGS))
    )


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _is_type_error(kind: str) -> bool:
    return kind.endswith("_type") or kind in ("literal_error", "union_tag_invalid")


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """Report the most specific error, naming the field as OpenAI does.

    For a field that takes several shapes (`prompt`, message `content`), pydantic reports one
    error per shape; the deepest one, preferring a bad value over a wrong type, is the one that
    tells the client what to fix.
    """
    errors = exc.errors(include_url=False)
    best = max(
        errors,
        key=lambda e: (len(_clean_loc(tuple(e["loc"]))), not _is_type_error(e["type"])),
    )
    if best["type"] != "missing" and any(e["type"] == "missing" for e in errors):
        best = next(e for e in errors if e["type"] == "missing")
    loc = _clean_loc(tuple(best["loc"]))
    param = param_path(loc) or None
    kind = best["type"]
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    msg = str(best["msg"]).removeprefix("Value error, ")
    got = best.get("input")
    detail = msg[0].lower() + msg[1:] if msg else "invalid value"
    if _is_type_error(kind):
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
