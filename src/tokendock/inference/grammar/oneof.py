"""`oneOf` is enforced only when its branches cannot match the same value: then the grammar's
plain alternation (which generates one branch's value) is exactly-one by construction.

The check runs before admission, so its work is linear in the schema: each schema node's kinds
are worked out once per depth (memo on the converter) — an anyOf-of-$ref graph walked without
one is k^depth paths (a 1.5 KB body once froze the server for 18 s) — and each branch's kinds
once per oneOf, not once per pair."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokendock.inference.grammar.schema import Path, SchemaConverter

MAX_ONE_OF = 64
MAX_KINDS_DEPTH = 8  # anyOf / oneOf levels looked through; deeper: "could be anything"
ALL_KINDS = frozenset({"null", "boolean", "object", "array", "string", "number"})


def check_disjoint(conv: SchemaConverter, branches: list[object], path: Path) -> None:
    if len(branches) > MAX_ONE_OF:
        conv.refuse(path, "oneOf", f" with more than {MAX_ONE_OF} branches")
    resolved = [conv.deref(b, path) for b in branches]
    kinds = [_kinds(conv, b, path) for b in resolved]
    tags = [_tags(conv, b, path) for b in resolved]
    for i in range(len(resolved)):
        for j in range(i + 1, len(resolved)):
            shared = kinds[i] & kinds[j]
            if shared and (shared != {"object"} or not _tagged_apart(tags[i], tags[j])):
                why = (
                    f"'oneOf' branches {i} and {j} may match the same value (supported: "
                    "branches of different types, or objects with a required property whose "
                    "const/enum values differ)"
                )
                conv.fail(path, "oneOf", why)


def _kinds(conv: SchemaConverter, schema: object, path: Path, depth: int = 0) -> frozenset[str]:
    """The JSON kinds a value of `schema` may have (ALL_KINDS when unsure). Memoized per
    (node, depth): the same answer the unmemoized walk gives, in time linear in the schema."""
    schema = conv.deref(schema, path)
    if not isinstance(schema, dict) or depth > MAX_KINDS_DEPTH:
        return ALL_KINDS
    memo = conv.kinds_memo
    key = (id(schema), depth)
    known = memo.get(key)
    if known is not None:
        return known
    conv.tick()
    values = constant_values(schema)
    declared = schema.get("type")
    if isinstance(declared, str):
        declared = [declared]
    found: frozenset[str] = ALL_KINDS
    if values is not None:
        found = frozenset(_kind(v) for v in values)
    elif isinstance(declared, list):
        found = frozenset("number" if t == "integer" else str(t) for t in declared)
    else:
        for word in ("anyOf", "oneOf"):
            if isinstance(schema.get(word), list):
                parts = (_kinds(conv, s, path, depth + 1) for s in schema[word])
                found = frozenset().union(*parts)
                break
    memo[key] = found
    return found


Tags = dict[str, frozenset[str]]


def _tags(conv: SchemaConverter, schema: object, path: Path) -> Tags:
    """An object branch's required properties that have const / enum values: name → the
    values (as canonical JSON text). Two object branches differing in one are disjoint."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    tags: Tags = {}
    for name in _strings(schema.get("required")):
        if name in props:
            node = conv.deref(props[name], path)
            values = constant_values(node)
            if values is not None:
                memo = conv.values_memo
                if id(node) not in memo:
                    memo[id(node)] = frozenset(json_key(v) for v in values)
                tags[name] = memo[id(node)]
    return tags


def _tagged_apart(a: Tags, b: Tags) -> bool:
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return any(name in large and values.isdisjoint(large[name]) for name, values in small.items())


# --- JSON values ------------------------------------------------------------------------------


def constant_values(schema: object) -> list[object] | None:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return enum if isinstance(enum, list) else None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def has_type(value: object, kind: str) -> bool:
    if kind == "integer":
        return _kind(value) == "number" and float(value).is_integer()  # type: ignore[arg-type]
    return _kind(value) == kind


def json_key(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
