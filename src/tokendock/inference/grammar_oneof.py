"""`oneOf` is enforced only when its branches cannot match the same value: then the grammar's
plain alternation (which generates one branch's value) is exactly-one by construction."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokendock.inference.grammar_schema import Path, SchemaConverter

MAX_ONE_OF = 64
ALL_KINDS = frozenset({"null", "boolean", "object", "array", "string", "number"})


def check_disjoint(conv: SchemaConverter, branches: list[object], path: Path) -> None:
    if len(branches) > MAX_ONE_OF:
        conv.refuse(path, "oneOf", f" with more than {MAX_ONE_OF} branches")
    resolved = [conv.deref(b, path) for b in branches]
    for i, a in enumerate(resolved):
        for j in range(i + 1, len(resolved)):
            if not _disjoint(conv, a, resolved[j], path):
                why = (
                    f"'oneOf' branches {i} and {j} may match the same value (supported: "
                    "branches of different types, or objects with a required property whose "
                    "const/enum values differ)"
                )
                conv.fail(path, "oneOf", why)


def _kinds(conv: SchemaConverter, schema: object, path: Path, depth: int = 0) -> frozenset[str]:
    schema = conv.deref(schema, path)
    if not isinstance(schema, dict) or depth > 8:
        return ALL_KINDS
    values = constant_values(schema)
    if values is not None:
        return frozenset(_kind(v) for v in values)
    declared = schema.get("type")
    if isinstance(declared, str):
        declared = [declared]
    if isinstance(declared, list):
        return frozenset("number" if t == "integer" else str(t) for t in declared)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return frozenset().union(*(_kinds(conv, s, path, depth + 1) for s in schema[key]))
    return ALL_KINDS


def _disjoint(conv: SchemaConverter, a: object, b: object, path: Path) -> bool:
    shared = _kinds(conv, a, path) & _kinds(conv, b, path)
    if not shared:
        return True
    if shared != {"object"} or not isinstance(a, dict) or not isinstance(b, dict):
        return False
    props_a, props_b = a.get("properties"), b.get("properties")
    if not isinstance(props_a, dict) or not isinstance(props_b, dict):
        return False
    required = set(_strings(a.get("required"))) & set(_strings(b.get("required")))
    for name in required & props_a.keys() & props_b.keys():
        va = constant_values(conv.deref(props_a[name], path))
        vb = constant_values(conv.deref(props_b[name], path))
        if (
            va is not None
            and vb is not None
            and not {json_key(v) for v in va} & {json_key(v) for v in vb}
        ):
            return True
    return False


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
