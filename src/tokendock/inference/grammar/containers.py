"""Objects and arrays for the schema converter (grammar_schema.py).

Objects list their properties in the schema's order: required ones always, optional ones
maybe; no other keys are generated (a subset of what `additionalProperties` allows), except for
a map (`additionalProperties` with no `properties`). Arrays: `prefixItems` then `items`, within
minItems / maxItems."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tokendock.inference.grammar.terms import literal

if TYPE_CHECKING:
    from tokendock.inference.grammar.schema import Path, SchemaConverter

MAX_ITEMS = 1000  # maxItems above this is generated as this many (still valid)


def object_rule(conv: SchemaConverter, schema: dict[str, object], path: Path, hint: str) -> str:
    rules = conv.rules
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        conv.fail(path, "properties", "'properties' must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        conv.fail(path, "required", "'required' must be a list of strings")
    for name in required:
        if name not in props:
            why = f"the required property {json.dumps(name)} is not listed in 'properties'"
            conv.fail(path, "required", why)
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, (bool, dict)):
        conv.fail(path, "additionalProperties", "'additionalProperties' must be a schema")
    ws = rules.primitive("ws")
    members: list[tuple[str, bool]] = []
    for key, sub in props.items():
        if sub is False:
            if key in required:
                conv.fail((*path, "properties", key), None, "a required property is false")
            continue
        value = conv.visit(sub, (*path, "properties", key), frozenset(), f"{hint}-{key}")
        name = literal(json.dumps(key, ensure_ascii=False))
        members.append((rules.add(f"{hint}-{key}-kv", f'{name} ":" {ws} {value}'), key in required))
    if not members:
        if extra is False or schema.get("unevaluatedProperties") is False:
            return rules.add(hint, f'"{{" {ws} "}}"')
        if extra is True or extra == {}:
            return rules.primitive("json-object")
        value = conv.visit(extra, (*path, "additionalProperties"), frozenset(), f"{hint}-value")
        member = rules.add(f"{hint}-member", f'{rules.primitive("json-string")} ":" {ws} {value}')
        return rules.add(hint, f'"{{" {ws} ( {member} ( "," {ws} {member} )* {ws} )? "}}"')
    if isinstance(extra, dict):  # checked, though only declared properties are generated
        conv.visit(extra, (*path, "additionalProperties"), frozenset(), f"{hint}-value")
    # after[i]: members i.. once something was written (each with a leading comma);
    # first[i]: members i.. when nothing was written yet (never empty; only while every member
    # before i is optional).
    after: list[str | None] = [None] * (len(members) + 1)
    for i in range(len(members) - 1, 0, -1):
        kv, needed = members[i]
        item = f'"," {ws} {kv}' if needed else f'( "," {ws} {kv} )?'
        tail = after[i + 1]
        after[i] = rules.add(f"{hint}-rest", f"{item} {tail}" if tail else item)
    stop = next((i for i, (_, needed) in enumerate(members) if needed), len(members) - 1)
    first: str | None = None
    for i in range(stop, -1, -1):
        kv, needed = members[i]
        head = f"{kv} {after[i + 1]}" if after[i + 1] else kv
        first = rules.add(f"{hint}-props", f"{head} | {first}" if first else head)
        # Its alternatives start with different quoted keys: one is left after the key.
        rules.exclusive.add(first)
    inner = f"{first} {ws}"
    if not any(needed for _, needed in members):
        inner = f"( {inner} )?"
    return rules.add(hint, f'"{{" {ws} {inner} "}}"')


def array_rule(conv: SchemaConverter, schema: dict[str, object], path: Path, hint: str) -> str:
    rules = conv.rules
    ws = rules.primitive("ws")
    prefix = schema.get("prefixItems", [])
    rest = schema.get("items", True)
    if isinstance(rest, list) and "prefixItems" not in schema:  # draft-07 tuple form
        prefix, rest = rest, True
    if not isinstance(prefix, list):
        conv.fail(path, "prefixItems", "'prefixItems' must be a list of schemas")
    low = conv.count(schema, "minItems", path) or 0
    if low > MAX_ITEMS:
        conv.refuse(path, "minItems", f" above {MAX_ITEMS}")
    high = conv.count(schema, "maxItems", path)
    if high is not None and high < low:
        conv.fail(path, "maxItems", "'maxItems' is below 'minItems'")
    if high is not None:
        high = min(high, MAX_ITEMS)
    heads = [
        conv.visit(sub, (*path, f"prefixItems[{i}]"), frozenset(), f"{hint}-{i}")
        for i, sub in enumerate(prefix)
    ]
    heads = heads[:high] if high is not None else heads
    rest_low = max(0, low - len(heads))
    rest_high = None if high is None else high - len(heads)
    if rest is False:
        if rest_low:
            conv.fail(path, "minItems", "'minItems' needs more items than 'prefixItems' allows")
        rest_high = 0
    item = "" if rest_high == 0 else conv.visit(rest, (*path, "items"), frozenset(), f"{hint}-item")
    if heads:
        body = f' "," {ws} '.join(heads)
        if rest_high != 0:
            body += f' ( "," {ws} {item} ){_times(rest_low, rest_high)}'
        return rules.add(hint, f'"[" {ws} {body} {ws} "]"')
    if rest_high == 0:
        return rules.add(hint, f'"[" {ws} "]"')
    count = _times(max(rest_low - 1, 0), None if rest_high is None else rest_high - 1)
    more = f'( "," {ws} {item} ){count}'
    if rest_low >= 1:
        return rules.add(hint, f'"[" {ws} {item} {more} {ws} "]"')
    return rules.add(hint, f'"[" {ws} ( {item} {more} {ws} )? "]"')


def _times(low: int, high: int | None) -> str:
    if high is None:
        return "*" if low == 0 else ("+" if low == 1 else f"{{{low},}}")
    return f"{{{low},{high}}}"
