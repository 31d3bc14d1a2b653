"""JSON Schema → GBNF rules. Every accepted keyword is enforced by the grammar (each generated
document validates); every keyword the grammar cannot enforce is refused with InvalidRequest
naming it and where it is. Rules are added to a `Rules` store the caller owns."""

from __future__ import annotations

import json
import math
import re
from typing import NoReturn
from urllib.parse import unquote

from tokendock.errors import InvalidRequest
from tokendock.inference.grammar.bounds import (
    MAX_CONSTANT_CHARS,
    MAX_DEPTH,
    MAX_ENUM_VALUES,
    MAX_GRAMMAR,
    MAX_NODES,
    MAX_VISIT_DEPTH,
    Budget,
)
from tokendock.inference.grammar.containers import array_rule, object_rule
from tokendock.inference.grammar.numbers import int_range
from tokendock.inference.grammar.oneof import check_disjoint, has_type, json_key
from tokendock.inference.grammar.productive import productive_rules
from tokendock.inference.grammar.regex import PatternError, pattern_gbnf
from tokendock.inference.grammar.terms import (
    FORMATS,
    UNENFORCEABLE_FORMATS,
    Rules,
    repeat,
    trie,
)

MAX_LENGTH = 5000  # minLength / maxLength / minItems / maxItems the grammar spells out

ANNOTATIONS = frozenset(
    {"title", "description", "examples", "default", "$schema", "$id", "$comment", "deprecated",
     "readOnly", "writeOnly", "$defs", "definitions", "discriminator"}
)  # fmt: skip
TYPE_KEYWORDS: dict[str, frozenset[str]] = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    ),
    "object": frozenset(
        {"properties", "required", "additionalProperties", "unevaluatedProperties"}
    ),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"}),
}
GENERAL = frozenset({"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref"})
ASSERTIONS = GENERAL.union(*TYPE_KEYWORDS.values())
SUPPORTED = ", ".join(sorted(ASSERTIONS | ANNOTATIONS))
TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")
Path = tuple[str, ...]


class SchemaConverter:
    def __init__(
        self, rules: Rules, root: object, *, param: str, budget: Budget | None = None
    ) -> None:
        self.rules = rules
        self.root = root
        self.param = param
        self.budget = budget or Budget(param=param)
        self.refs: dict[str, str] = {}
        self.kinds_memo: dict[tuple[int, int], frozenset[str]] = {}  # grammar_oneof.py
        self.values_memo: dict[int, frozenset[str]] = {}
        self.constant_chars = 0  # of enum / const text so far
        self._depth = 0  # schema levels being visited, through $refs

    def tick(self) -> None:
        self.budget.tick()

    def convert(self, name: str) -> str:
        self._check_size()
        before = sum(len(b) for b in self.rules.bodies.values())
        try:
            rule = self.visit(self.root, (), frozenset(), name)
        except RecursionError:  # the depth bounds come first; this is the last line
            self.fail((), None, f"the schema nests deeper than {MAX_VISIT_DEPTH} levels")
        if sum(len(b) for b in self.rules.bodies.values()) - before > MAX_GRAMMAR:
            self.fail(
                (),
                None,
                f"the schema is too large to enforce (over {MAX_GRAMMAR:,} characters of grammar)",
            )
        if rule not in productive_rules(self.rules.bodies):
            endless = "a reference recurses through required properties or items without end"
            self.fail((), None, f"the schema has no finite valid value ({endless})")
        return rule

    # --- errors ---------------------------------------------------------------------------

    def fail(self, path: Path, keyword: str | None, detail: str, tail: str = "") -> NoReturn:
        where = ".".join(path) if path else "the top level"
        param = ".".join([self.param, *path, *([keyword] if keyword else [])])
        message = f"Invalid '{self.param}': {detail} at {where}{tail}."
        raise InvalidRequest(message, param=param)

    def refuse(self, path: Path, keyword: str, why: str = "") -> NoReturn:
        tail = f" is not supported (supported: {SUPPORTED})"
        self.fail(path, keyword, f"the keyword '{keyword}'{why}", tail)

    def _check_size(self) -> None:
        stack: list[tuple[object, int]] = [(self.root, 1)]
        nodes = 0
        while stack:
            node, depth = stack.pop()
            nodes += 1
            if nodes > MAX_NODES:
                self.fail((), None, f"the schema has more than {MAX_NODES} nodes")
            if depth > MAX_DEPTH:
                self.fail((), None, f"the schema nests deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                stack.extend((child, depth + 1) for child in node.values())
            elif isinstance(node, list):
                stack.extend((child, depth + 1) for child in node)

    # --- dispatch -------------------------------------------------------------------------

    def visit(self, schema: object, path: Path, pending: frozenset[str], hint: str) -> str:
        """The rule for values matching `schema`; `pending` holds the $refs being expanded
        since the last '{' or '[' (meeting one again would be left recursion)."""
        if self._depth >= MAX_VISIT_DEPTH:
            why = f"the schema nests deeper than {MAX_VISIT_DEPTH} levels (counting each $ref)"
            self.fail(path, None, why)
        self.tick()
        self._depth += 1
        try:
            rule = self._visit(schema, path, pending, hint)
        finally:
            self._depth -= 1
        self.rules.origins.setdefault(rule, ".".join([self.param, *path]))
        return rule

    def _visit(self, schema: object, path: Path, pending: frozenset[str], hint: str) -> str:
        if schema is True:
            return self.rules.primitive("json-value")
        if schema is False:
            self.fail(path, None, "the schema false matches nothing")
        if not isinstance(schema, dict):
            self.fail(path, None, "a schema must be a JSON object or a boolean")
        for key in schema:
            if key == "$id" and path:
                self.refuse(path, key, " below the top level")
            if key not in ANNOTATIONS and key not in ASSERTIONS:
                self.refuse(path, key)
        if schema.get("uniqueItems", False) is not False:
            self.refuse(path, "uniqueItems", " with the value true")
        if schema.get("unevaluatedProperties", False) not in (True, False):
            self.refuse(path, "unevaluatedProperties", " with a schema value")
        if "$ref" in schema:
            self._alone(schema, path, "$ref")
            return self._ref(schema["$ref"], path, pending)
        if "allOf" in schema:
            self._alone(schema, path, "allOf")
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                self.refuse(path, "allOf", " with other than exactly one schema")
            return self.visit(parts[0], (*path, "allOf[0]"), pending, hint)
        if "anyOf" in schema or "oneOf" in schema:
            return self._union(schema, path, pending, hint)
        if "enum" in schema or "const" in schema:
            return self._constants(schema, path, hint)
        alts = [self._typed(t, schema, path, hint) for t in self._types(schema, path)]
        return alts[0] if len(alts) == 1 else self.rules.add(hint, " | ".join(alts))

    def _alone(self, schema: dict[str, object], path: Path, keyword: str) -> None:
        for key in schema:
            if key != keyword and key not in ANNOTATIONS:
                self.refuse(path, key, f" next to '{keyword}'")

    def _types(self, schema: dict[str, object], path: Path) -> list[str]:
        declared = schema.get("type")
        if declared is None:
            implied = [t for t, words in TYPE_KEYWORDS.items() if words & schema.keys()]
            return implied or ["any"]
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not names or any(n not in TYPES for n in names):
            self.fail(path, "type", f"'type' must be one of {', '.join(TYPES)} or a list of them")
        if "number" in names:
            names = [n for n in names if n != "integer"]
        return list(dict.fromkeys(names))

    def _typed(self, kind: str, schema: dict[str, object], path: Path, hint: str) -> str:
        if kind == "any":
            return self.rules.primitive("json-value")
        if kind in ("null", "boolean"):
            return self.rules.primitive(f"json-{kind}")
        if kind == "string":
            return self._string(schema, path, hint)
        if kind in ("number", "integer"):
            return self._number(schema, path, hint, integer=kind == "integer")
        if kind == "object":
            return object_rule(self, schema, path, hint)
        return array_rule(self, schema, path, hint)

    # --- references and combinators -------------------------------------------------------

    def _ref(self, ref: object, path: Path, pending: frozenset[str]) -> str:
        if not isinstance(ref, str) or not (
            ref == "#" or ref.startswith(("#/$defs/", "#/definitions/"))
        ):
            where = "('#/$defs/...', '#/definitions/...')"
            self.fail(path, "$ref", f"only local references {where} are supported, not {ref!r}")
        if ref in pending:
            loop = f"the reference {ref!r} refers back to itself with no object or array between"
            self.fail(path, "$ref", loop)
        if ref in self.refs:
            return self.refs[ref]
        target, target_path = self.resolve(ref, path)
        name = self.rules.reserve(target_path[-1] if target_path else "root-ref")
        self.refs[ref] = name
        self.rules.define(name, self.visit(target, target_path, pending | {ref}, name))
        return name

    def resolve(self, ref: str, path: Path) -> tuple[object, Path]:
        node, where = self.root, []
        for part in ref[2:].split("/") if ref != "#" else []:
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                self.fail(path, "$ref", f"the reference {ref!r} does not resolve")
            where.append(key)
        return node, tuple(where)

    def deref(self, schema: object, path: Path) -> object:
        for _ in range(MAX_DEPTH):
            if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
                schema = self.resolve(schema["$ref"], path)[0]
            elif isinstance(schema, dict) and isinstance(schema.get("allOf"), list):
                schema = schema["allOf"][0] if schema["allOf"] else True
            else:
                break
        return schema

    def _union(
        self, schema: dict[str, object], path: Path, pending: frozenset[str], hint: str
    ) -> str:
        if "anyOf" in schema and "oneOf" in schema:
            self.refuse(path, "oneOf", " next to 'anyOf'")
        key = "anyOf" if "anyOf" in schema else "oneOf"
        self._alone(schema, path, key)
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            self.fail(path, key, f"'{key}' must be a non-empty list of schemas")
        alts = [
            self.visit(branch, (*path, f"{key}[{i}]"), pending, f"{hint}-{i}")
            for i, branch in enumerate(branches)
        ]
        if key == "oneOf":
            check_disjoint(self, branches, path)
        return self.rules.add(hint, " | ".join(dict.fromkeys(alts)))

    def _constants(self, schema: dict[str, object], path: Path, hint: str) -> str:
        for key in schema:
            if key not in ("enum", "const", "type") and key not in ANNOTATIONS:
                self.refuse(path, key, " next to 'enum' / 'const'")
        enum = schema.get("enum", [schema.get("const")])
        if not isinstance(enum, list) or not enum:
            self.fail(path, "enum", "'enum' must be a non-empty list")
        values = list(enum)
        if "const" in schema:
            values = [v for v in values if json_key(v) == json_key(schema["const"])]
        if "type" in schema:
            kinds = self._types(schema, path)
            values = [v for v in values if any(has_type(v, t) for t in kinds)]
        if not values:
            self.fail(path, "enum", "no value satisfies 'enum' / 'const' and 'type' together")
        texts = dict.fromkeys(self._constant_text(v, path) for v in values)
        if len(texts) > MAX_ENUM_VALUES:
            self.refuse(path, "enum", f" with more than {MAX_ENUM_VALUES} values")
        self.constant_chars += sum(len(t) for t in texts)
        if self.constant_chars > MAX_CONSTANT_CHARS:
            why = (
                f"the schema's enum / const values total more than {MAX_CONSTANT_CHARS} characters"
            )
            self.fail(path, "enum" if "enum" in schema else "const", why)
        return self.rules.add(hint, trie(self.rules, texts, hint))

    def _constant_text(self, value: object, path: Path) -> str:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            self.fail(path, "enum", "enum / const values must be finite numbers (no NaN, Infinity)")

    # --- scalars --------------------------------------------------------------------------

    def count(self, schema: dict[str, object], key: str, path: Path) -> int | None:
        value = schema.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.fail(path, key, f"'{key}' must be a non-negative integer")
        if key.startswith("min") and value > MAX_LENGTH:
            self.refuse(path, key, f" above {MAX_LENGTH}")
        return value

    def _string(self, schema: dict[str, object], path: Path, hint: str) -> str:
        low = self.count(schema, "minLength", path)
        high = self.count(schema, "maxLength", path)
        if low is not None and high is not None and high < low:
            self.fail(path, "maxLength", "'maxLength' is below 'minLength'")
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if isinstance(fmt, str) and fmt in FORMATS:
            if pattern is not None:
                self.refuse(path, "pattern", " next to 'format'")
            rule, shortest, longest = FORMATS[fmt]
            if (low or 0) > shortest or (high is not None and high < longest):
                sizes = f"its values are {shortest}-{longest} characters long"
                why = f"'minLength' / 'maxLength' cannot be enforced with '{fmt}' ({sizes})"
                self.fail(path, "format", why)
            return self.rules.add(f"{hint}-{fmt}", f'"\\"" {self.rules.primitive(rule)} "\\""')
        if isinstance(fmt, str) and fmt in UNENFORCEABLE_FORMATS:
            known = ", ".join(FORMATS)
            self.fail(path, "format", f"the format '{fmt}' is not supported (supported: {known})")
        char = self.rules.primitive("json-char")
        if pattern is not None:
            if low is not None or high is not None:
                self.refuse(path, "pattern", " next to 'minLength' / 'maxLength'")
            if not isinstance(pattern, str):
                self.fail(path, "pattern", "'pattern' must be a string")
            try:
                re.compile(pattern)
                inner = pattern_gbnf(pattern, char)
            except (re.error, PatternError) as exc:
                why = f"the pattern {json.dumps(pattern)} cannot be enforced ({exc})"
                self.fail(path, "pattern", why)
            rule = self.rules.add(f"{hint}-pattern", f'"\\"" {inner} "\\""')
            self.rules.careful.add(rule)  # a user's regex may split text in several ways
            return rule
        if low is None and high is None:
            return self.rules.primitive("json-string")
        run = repeat(self.rules, char, low or 0, high, hint)
        return self.rules.add(hint, f'"\\"" {run} "\\""')

    def _number(self, schema: dict[str, object], path: Path, hint: str, *, integer: bool) -> str:
        step = schema.get("multipleOf")
        if step is not None:
            if step != 1 or isinstance(step, bool):
                self.refuse(path, "multipleOf", " with a value other than 1")
            integer = True
        low, high = self._bounds(schema, path)
        if low is None and high is None:
            return self.rules.primitive("json-integer" if integer else "json-number")
        whole = int_range(low, high)
        alts = [whole]
        if not integer:
            alts[0] = whole and f'{whole} ( "." "0"{{1,15}} )?'
            frac = '"." [0-9]{1,15}'
            pos_low = max(low, 0) if low is not None else 0
            pos = int_range(pos_low, high - 1 if high is not None else None)
            neg_low = max(0, -high) if high is not None else 0
            neg = int_range(neg_low, -low - 1 if low is not None else None)
            alts += [pos and f"{pos} {frac}", neg and f'"-" {neg} {frac}']
        bodies = [a for a in alts if a]
        if not bodies:
            self.fail(path, "minimum", "no value the grammar can produce lies within the bounds")
        return self.rules.add(hint, " | ".join(bodies))

    def _bounds(self, schema: dict[str, object], path: Path) -> tuple[int | None, int | None]:
        """Inclusive integer bounds; every integer (and k.xxx for k, k+1 inside) between them
        satisfies minimum / maximum / exclusive*."""
        nums: dict[str, float | int | bool] = {}
        for key in TYPE_KEYWORDS["number"] - {"multipleOf"}:
            value = schema.get(key)
            exclusive_flag = key.startswith("exclusive") and isinstance(value, bool)
            if (
                value is not None
                and not exclusive_flag
                and (not isinstance(value, (int, float)) or isinstance(value, bool))
            ):
                self.fail(path, key, f"'{key}' must be a number")
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(path, key, f"'{key}' must be a finite number (not NaN or Infinity)")
            if isinstance(value, (int, float)):
                nums[key] = value
        lows, highs = [], []
        if "minimum" in nums:
            m = nums["minimum"]
            lows.append(math.floor(m) + 1 if nums.get("exclusiveMinimum") is True else math.ceil(m))
        if "maximum" in nums:
            m = nums["maximum"]
            highs.append(
                math.ceil(m) - 1 if nums.get("exclusiveMaximum") is True else math.floor(m)
            )
        if not isinstance(nums.get("exclusiveMinimum", True), bool):
            lows.append(math.floor(nums["exclusiveMinimum"]) + 1)
        if not isinstance(nums.get("exclusiveMaximum", True), bool):
            highs.append(math.ceil(nums["exclusiveMaximum"]) - 1)
        return (max(lows) if lows else None), (min(highs) if highs else None)
