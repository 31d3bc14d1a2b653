"""One parser policy for every JSON body, checked before the schema sees it.

Every request body goes through `screen` (web/deps.py `parse_body`) and is refused with a 400
that names the field when it carries what pydantic's JSON parser would let through but nothing
downstream can handle:

- NaN, Infinity, -Infinity and numbers that overflow a double (`1e999`): not JSON (RFC 8259),
  and a JSON schema's `minimum: NaN` or `Infinity` broke the grammar compiler with a 500.
- Nesting deeper than MAX_DEPTH (64) levels of objects and arrays: no API field nests that
  deep (a tool's JSON schema nests two levels per property), and everything that walks a
  parsed body recursively (the schema → grammar compiler, the upstream's JSON writer) stays
  far below Python's recursion limit.
- A NUL character (`\\u0000`) or a lone UTF-16 surrogate (`\\ud800`) in any string or key:
  PostgreSQL's text columns cannot store either, so a usage row, a stored response or its
  metadata would fail to be written after the tokens were generated. Refused at the door on
  both databases, so what a request may carry does not depend on the backend.

Cost, on the hot path: one orjson parse (C; it refuses NaN, Infinity, overflow and lone
surrogates itself) and two byte scans; only a body that could break a rule (a `\\u0000`
escape, more than MAX_DEPTH brackets, or a refusal by orjson) is walked in Python, to find
and name the field. Measured on a 2-core machine: ~2 µs for a typical chat body, ~1–3.5 ms
for a 1 MB body (docs/reliability.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from tokendock.errors import InvalidRequest
from tokendock.protocol.errors import param_path

MAX_DEPTH = 64

_NUL_ESCAPE = b"\\u0000"
# Where a walk came from: (parent, key) links, built only as far as the walk goes; turned
# into a field path ('messages[0].content') only for the error.
_Where = tuple[Any, str | int] | None


def screen(body: bytes) -> Any:
    """A 400 naming the field for anything the policy above refuses; else the parsed body
    (None when orjson refused it for a reason the policy leaves to the schema's parser: bad
    JSON, an integer past 64 bits)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # NaN, Infinity, an overflowing number, a lone surrogate, nesting past orjson's own
        # limit (1,024), or plain bad JSON: the lenient parser tells which field, if any.
        _explain(body)
        return None
    if _NUL_ESCAPE in body:
        _walk(value, strings=True, numbers=False)
    elif _more_brackets_than(body, MAX_DEPTH) and _too_deep_somewhere(value):
        _walk(value, strings=False, numbers=False)  # to name the field
    return value


def _too_deep_somewhere(root: Any) -> bool:
    """Does `root` nest deeper than MAX_DEPTH? One level at a time, containers only: ~4× as
    fast as the walk that names the field."""
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for value in level
            for child in (value.values() if type(value) is dict else value)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


def _explain(body: bytes) -> None:
    """The body orjson refused, parsed by the standard library (which takes NaN, Infinity and
    lone surrogates) and walked for the field to name."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise _too_deep(None) from None
    except ValueError:  # not JSON (or not UTF-8): the schema's parser says so
        return
    _walk(value, strings=True, numbers=True)


def _more_brackets_than(body: bytes, limit: int) -> bool:
    """Could the body nest deeper than `limit`? Not unless it holds more than `limit` opening
    brackets: counted in one C loop each when the body is small, else with `find` (memchr),
    stopping at the first one past the limit."""
    if len(body) <= 65_536:
        return body.count(b"{") + body.count(b"[") > limit
    count = 0
    for bracket in (b"{", b"["):
        at = body.find(bracket)
        while at >= 0:
            count += 1
            if count > limit:
                return True
            at = body.find(bracket, at + 1)
    return False


def _walk(root: Any, *, strings: bool, numbers: bool) -> None:
    """Every container of `root` (iteratively: depth is what is being checked), its keys and
    values: the first that breaks the policy is refused."""
    stack: list[tuple[Any, int, _Where]] = [(root, 1, None)]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(_top(where))
        items = value.items() if type(value) is dict else enumerate(value)
        for key, item in items:
            if strings and type(key) is str:
                _check_text(key, where, is_key=True)
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1, (where, key)))
            elif kind is str:
                if strings:
                    _check_text(item, (where, key))
            elif kind is float and numbers and not math.isfinite(item):
                path = _path((where, key))
                raise InvalidRequest(
                    f"Invalid value for '{path}': NaN, Infinity and numbers beyond a double's "
                    "range are not valid JSON numbers.",
                    param=path,
                )


def _check_text(text: str, where: _Where, *, is_key: bool = False) -> None:
    """A string (or, `is_key`, a key of the object at `where`) PostgreSQL could not store."""
    problem = None
    if "\x00" in text:
        problem = "a NUL character (\\u0000)"
    elif not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problem = "a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)"
    if problem is None:
        return
    path = _path(where)
    if is_key:
        raise InvalidRequest(
            f"Invalid key in '{path or 'the request body'}': keys must not contain {problem}.",
            param=path or None,
        )
    raise InvalidRequest(
        f"Invalid value for '{path}': the text must not contain {problem}.", param=path
    )


def _too_deep(field: str | None) -> InvalidRequest:
    where = f" in '{field}'" if field else ""
    return InvalidRequest(
        f"The request body is nested too deeply{where}: at most {MAX_DEPTH} levels of objects "
        "and arrays are allowed.",
        param=field,
    )


def _top(where: _Where) -> str | None:
    """The top-level field `where` is under (the full path of a too-deep value is as long as
    the nesting itself); None for a body that is not an object."""
    key: str | int | None = None
    while where is not None:
        where, key = where
    return key if isinstance(key, str) else None


def _path(where: _Where) -> str:
    parts: list[str | int] = []
    while where is not None:
        where, key = where
        parts.append(key)
    return param_path(tuple(reversed(parts)))
