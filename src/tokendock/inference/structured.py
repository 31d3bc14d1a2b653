"""Structured output on the embedded engine: what a request asks for (tools, a JSON schema) and
the grammar that makes the answer valid by construction.

Tool calls use one text format on every model (the Hermes style many open models are trained
on), which tools.py puts in the prompt and parses back:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`tool_choice` "required" or a named function constrains the answer from its first token to one
or more such calls, each call's arguments valid against its function's schema. "auto" leaves the
model free until it writes `<tool_call>`; from there the grammar holds (a lazy grammar, see
picker.py). `response_format` json_object / json_schema constrain the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tokendock.inference.vocabulary import Grammar

if TYPE_CHECKING:
    from tokendock.inference.grammar.builder import GrammarBuilder

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# Calls one answer may make when parallel calls are allowed.
MAX_PARALLEL_CALLS = 8


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    param: str = "tools"  # where it was in the request, for a 400 about its schema


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The request's tools and how they may be used. `choice`: "auto", "required", "none" or
    the name of the one function to call. `legacy`: sent as `functions` / `function_call`."""

    tools: tuple[Tool, ...]
    choice: str = "auto"
    parallel: bool = True
    legacy: bool = False

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.choice not in ("auto", "none")

    def offered(self) -> tuple[Tool, ...]:
        """The tools the model may call."""
        if self.choice in ("auto", "required", "none"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    kind: Literal["json_object", "json_schema"]
    schema: Any = None
    name: str = ""
    param: str = "response_format.json_schema.schema"


def answer_grammar(
    tools: ToolUse | None, output: OutputFormat | None, *, logprobs: bool = False
) -> Grammar | None:
    """The grammar for a request's answer, or None when it is free text. A schema the grammar
    cannot enforce, or over a bound of grammar_bounds.py (stricter with `logprobs`, which mask
    the whole vocabulary with the grammar at every step), is a 400 naming it. Bounded work
    (well under the 1 s deadline it checks), but not a trivial amount for a big schema: the
    pipeline runs it off the event loop."""
    from tokendock.inference.grammar.bounds import MAX_STACKS, MAX_STACKS_LOGPROBS
    from tokendock.inference.grammar.builder import GrammarBuilder

    stacks = MAX_STACKS_LOGPROBS if logprobs else MAX_STACKS
    if tools is not None and tools.active:
        return _tools_grammar(tools, GrammarBuilder(max_stacks=stacks, param="tools"))
    if output is None:
        return None
    builder = GrammarBuilder(max_stacks=stacks, param=output.param)
    if output.kind == "json_object":
        return Grammar(builder.grammar(builder.any_object()))
    value = builder.schema(output.schema, name="answer", param=output.param)
    return Grammar(builder.grammar(value))


def carries_schema(tools: ToolUse | None, output: OutputFormat | None) -> bool:
    """Does the request ask for a grammar made from a client's schema (the work worth a
    thread)? json_object mode and free text do not."""
    return (tools is not None and tools.active) or (
        output is not None and output.kind == "json_schema"
    )


def _tools_grammar(use: ToolUse, b: GrammarBuilder) -> Grammar:
    ws = b.rule("tdk-ws", "[ \\n]{0,2}")
    alternatives = []
    for i, tool in enumerate(use.offered()):
        schema = tool.parameters if tool.parameters is not None else {"type": "object"}
        args = b.schema(schema, name=f"tdk-args-{i}", param=f"{tool.param}.parameters")
        alternatives.append(
            f"{b.literal(tool.name)} {b.literal(chr(34))} {ws} "
            f'"," {ws} {b.literal(chr(34) + "arguments" + chr(34))} {ws} ":" '
            f"{ws} {args}"
        )
    body = b.rule(
        "tdk-call-body",
        f'{ws} "{{" {ws} {b.literal(chr(34) + "name" + chr(34))} {ws} ":" {ws} '
        f'{b.literal(chr(34))} ( {" | ".join(alternatives)} ) {ws} "}}" {ws} '
        f"{b.literal(CALL_CLOSE)}",
    )
    call = b.rule("tdk-call", f"{b.literal(CALL_OPEN)} {body}")
    # A named function is called once (as OpenAI does); otherwise up to MAX_PARALLEL_CALLS.
    several = use.parallel and use.choice in ("auto", "required")
    more = f' ( "\\n" {call} ){{0,{MAX_PARALLEL_CALLS - 1}}}' if several else ""
    if use.forced:
        return Grammar(b.grammar(f"{call}{more}"))
    # auto: free text until the model opens a call; the grammar covers what follows the trigger.
    return Grammar(b.grammar(f"{body}{more}"), trigger=CALL_OPEN)
