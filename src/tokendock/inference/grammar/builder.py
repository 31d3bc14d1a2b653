"""JSON schemas → llama.cpp GBNF grammars, for `response_format` and tool calls.

    b = GrammarBuilder()
    args = b.schema(parameters, name="get_weather", param="tools[0].function.parameters")
    head = b.literal('{"name": "get_weather", "arguments": ')
    text = b.grammar(b.rule("call", f'{head} {args} {b.literal("}")}'))

What is accepted is enforced: every document the grammar allows validates against the schema
(a subset of the valid documents: declared properties in order, no extra keys, bounded
whitespace). What the grammar could not enforce is refused up front with InvalidRequest naming
the keyword and where it is (`param` = the request field path down to the keyword).

Supported keywords: type (one or a list), enum, const, anyOf, oneOf (when the branches cannot
overlap: different types, or objects with a required const/enum discriminator), allOf with one
schema, local $ref (`#`, `#/$defs/...`, `#/definitions/...`; recursion through objects/arrays),
properties, required, additionalProperties, unevaluatedProperties false, items, prefixItems,
minItems, maxItems, minLength, maxLength, pattern (see grammar_regex.py), format (date, time,
date-time, uuid, ipv4, hostname, email, uri; unknown format names are annotations), minimum,
maximum, exclusiveMinimum, exclusiveMaximum, multipleOf 1; annotations title, description,
examples, default, $schema, $id (top level), $comment, deprecated, readOnly, writeOnly, $defs,
definitions, discriminator.
Refused: not, if/then/else, allOf with several schemas, patternProperties, propertyNames,
dependentRequired / dependentSchemas / dependencies, minProperties / maxProperties, contains /
minContains / maxContains, uniqueItems true, multipleOf other than 1, $dynamicRef / $anchor /
remote refs, formats ipv6, uri-reference, iri, idn-*, duration, regex, json-pointer,
uri-template; any keyword not listed above; minLength above 5000, minItems above 1000,
non-local or unresolvable $ref, a $ref loop with no object/array in between, schemas with no
finite valid value, NaN / Infinity as a number; and what is over a bound of grammar_bounds.py
(nodes, nesting through $refs, enum sizes, grammar size, parse stacks, conversion time).
Generated as a subset (still valid): maxItems above 1000 → 1000; maxLength more than 100,000
above minLength → that; number bounds → integers within them plus k.xxx where [k, k+1] fits;
format uri → http(s) URLs; a bounded whitespace between tokens (" " or a newline + 24 indent).
"""

from __future__ import annotations

from tokendock.errors import InvalidRequest
from tokendock.inference.grammar.bounds import MAX_GRAMMAR, MAX_STACKS, Budget, check_stacks
from tokendock.inference.grammar.schema import SchemaConverter
from tokendock.inference.grammar.terms import Rules
from tokendock.inference.grammar.terms import literal as gbnf_literal


class GrammarBuilder:
    """Accumulates rules; one builder makes one grammar. `grammar()` refuses one that may keep
    more than `max_stacks` parse stacks; `budget` is the whole conversion's deadline; `param`
    names the request field when a bound is broken by the grammar as a whole."""

    def __init__(
        self, *, max_stacks: int = MAX_STACKS, budget: Budget | None = None, param: str = ""
    ) -> None:
        self._rules = Rules()
        self._max_stacks = max_stacks
        self._param = param
        self._budget = budget or Budget(param=param)

    def schema(self, schema: object, *, name: str, param: str) -> str:
        """Add rules for values matching `schema` and return the rule name to reference.
        Raises InvalidRequest (param = `param` + the path to the offending keyword) for what the
        grammar cannot enforce; the builder is unchanged then."""
        converter = SchemaConverter(self._rules.copy(), schema, param=param, budget=self._budget)
        rule = converter.convert(name)
        self._rules = converter.rules
        return rule

    def any_object(self) -> str:
        """The rule for any JSON object (json_object mode)."""
        return self._rules.primitive("json-object")

    def any_value(self) -> str:
        return self._rules.primitive("json-value")

    def json_string(self) -> str:
        """The rule for any JSON string (quotes included)."""
        return self._rules.primitive("json-string")

    def ws(self) -> str:
        """The rule for the bounded whitespace allowed between JSON tokens."""
        return self._rules.primitive("ws")

    def rule(self, name: str, body: str) -> str:
        """Add a raw GBNF rule (a new name derived from `name`, or the existing rule with the
        same body) and return its name."""
        return self._rules.add(name, body)

    @staticmethod
    def literal(text: str) -> str:
        """A GBNF string literal for exactly `text`."""
        return gbnf_literal(text)

    def grammar(self, root: str) -> str:
        """The whole grammar, `root ::= <root>` first; a 400 when it is over a bound."""
        text = self._rules.text(root)
        if len(text) > MAX_GRAMMAR:
            raise InvalidRequest(
                f"Invalid '{self._param}': the schema is too large to enforce (its grammar "
                f"would be over {MAX_GRAMMAR:,} characters).",
                param=self._param,
                code="schema_too_complex",
            )
        check_stacks(
            self._rules.bodies,
            root,
            careful=self._rules.careful,
            exclusive=self._rules.exclusive,
            origins=self._rules.origins,
            param=self._param,
            limit=self._max_stacks,
            budget=self._budget,
        )
        return text


def schema_grammar(schema: object, *, param: str, max_stacks: int = MAX_STACKS) -> str:
    """A grammar whose root is one JSON value matching `schema`."""
    builder = GrammarBuilder(max_stacks=max_stacks, param=param)
    return builder.grammar(builder.schema(schema, name="schema", param=param))


def json_object_grammar() -> str:
    """A grammar whose root is any one JSON object."""
    builder = GrammarBuilder()
    return builder.grammar(builder.any_object())
