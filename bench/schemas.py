"""Adversarial JSON schemas for the abuse benchmark (issue 18, rows 1, 2 and 8), and the worst
schema the converter's bounds accept (inference/grammar/bounds.py). Import-light on purpose:
plain dicts, no tokendock imports, so a benchmark can build request bodies without the server's
code.

    stalling_anyof(k, m)  anyOf of k arrays, each starting with a $ref to an enum of m strings:
                          llama.cpp's grammar keeps k x m parse stacks (refused: stacks)
    huge_enum(n)          one enum of n strings sharing long prefixes (refused above 1,000)
    exponential_oneof(k)  a oneOf over a chain of anyOf-of-$ref, k refs per level: the
                          disjointness check must stay linear (accepted: it is disjoint)
    deep_pattern(n)       a pattern of n nested groups (refused: nesting)
    ref_chain(n)          a $ref chain of n arrays (refused above 32 references deep)
    worst_accepted()      the schema at every bound at once: the worst per-step cost accepted
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def stalling_anyof(k: int, m: int) -> JSON:
    values = [f"option-{i:04d}" for i in range(m)]
    branches = [
        {"type": "array", "prefixItems": [{"$ref": "#/$defs/pick"}, {"const": i}], "items": False}
        for i in range(k)
    ]
    return {"$defs": {"pick": {"enum": values}}, "anyOf": branches}


def huge_enum(n: int) -> JSON:
    return {"type": "string", "enum": [f"a-rather-long-shared-prefix-{i:05d}" for i in range(n)]}


def exponential_oneof(k: int, levels: int = 8) -> JSON:
    defs: JSON = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"} for _ in range(k)]} for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"$defs": defs, "oneOf": [{"$ref": "#/$defs/d0"}, {"type": "integer"}]}


def deep_pattern(n: int) -> JSON:
    return {"type": "string", "pattern": "(" * n + "a" + ")" * n}


def ref_chain(n: int) -> JSON:
    defs: JSON = {
        f"a{i}": {"type": "array", "items": {"$ref": f"#/$defs/a{i + 1}"}} for i in range(n)
    }
    defs[f"a{n}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/a0"}


def worst_accepted() -> JSON:
    """The stalling shape at the largest size the parse-stack bound (128) accepts: 12 arrays
    whose enum trie branches 10 ways (estimated 120 stacks). Measured (bench/grammar_cost.py,
    CPU of the engine thread, default model): accepting a token 0.2 ms, checking the picked
    token 0.03 ms, masking a refused pick's 768 candidates 0.4 ms; masking the whole
    vocabulary (logprobs; a rare fallback without) ~300 ms, against ~170 ms for any schema
    inside a plain string — that cost is the picker's, not the schema's."""
    return stalling_anyof(12, 10)
