"""Single stream: bare llama-cpp-python against the TokenDock server, side by side.

Three measurements per side, same model file, same prompt tokens, same thread count:

* prompt processing — a ~1000-token prompt evaluated once (bare: `llm.eval`; TokenDock: a
  streamed `/v1/completions` request with `max_tokens=1`, timed until `[DONE]`);
* time to first token — a ~25-token prompt, from the call (bare: tokenize + `llm.generate`;
  TokenDock: the HTTP request) to the first token (bare) or first content chunk (TokenDock);
* single-stream generation — the same request continued greedily to `--tokens` tokens; speed is
  (tokens - 1) / (time from the first token to the last).

The two sides never compute at the same time: each repetition runs one side, pauses, then the
other (the order alternates between repetitions), after one warm-up repetition per side. Every
repetition uses its own prompts (a different number up front), so a prefix cache inside the
server cannot skip prompt work that the bare side has to do. The reported value is the median
over the repetitions. bench/engine.py runs this first, then the concurrency sweep.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import TokenDock

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
MODEL_ID = "gemma-3-270m"
MODEL_PATH = DATA_DIR / "models" / "gemma-3-270m-q4_k_m.gguf"
SETTLE_SECONDS = 0.3  # lets llama.cpp worker threads of the side that just ran go idle
REQUEST_TIMEOUT = 300.0

# About 100 tokens; repeated to make the long prompt. Plain prose, no special tokens.
PROSE = (
    "The harbour town wakes slowly in winter. Fishing boats leave before dawn, their lamps "
    "swinging over black water, while the bakers on the hill light their ovens and the first "
    "trams rattle down towards the market square. By nine the cafés are full of dock workers, "
    "students and old men arguing about the weather, the price of fuel and the football. "
)
PROSE_REPEATS = 15
SMOKE_PROSE_REPEATS = 1  # --smoke: a ~100-token prompt
SMOKE_TOKENS = 4


def short_prompt(rep: int) -> str:
    """A counting prompt: greedy decoding continues it for hundreds of tokens without EOS."""
    start = 101 + (37 * rep) % 850  # always three digits: same token count every rep
    return "Counting up: " + ", ".join(str(start + i) for i in range(4)) + ","


def long_prompt(rep: int, repeats: int = PROSE_REPEATS) -> str:
    return f"Note {rep + 1}. " + PROSE * repeats


@dataclass(slots=True)
class Sample:
    """One repetition of one side."""

    prompt_tokens: int
    prompt_ms: float
    ttft_ms: float
    gen_tokens: int
    gen_tps: float
    text: str

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1000)


def _ms(seconds: float) -> float:
    return seconds * 1000


# -- bare llama-cpp-python ------------------------------------------------------------------


class BareLlama:
    def __init__(self, model_path: Path, threads: int, prose_repeats: int = PROSE_REPEATS):
        import llama_cpp

        self.prose_repeats = prose_repeats
        self._lib = llama_cpp
        self._llm: Any = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=4096,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )

    def close(self) -> None:
        self._llm.close()
        self._llm = None

    def run(self, rep: int, tokens: int) -> Sample:
        prompt_tokens, prompt_s = self._prompt_eval(long_prompt(rep, self.prose_repeats))
        ttft_s, stamps, text = self._generate(short_prompt(rep), tokens)
        return Sample(
            prompt_tokens=prompt_tokens,
            prompt_ms=_ms(prompt_s),
            ttft_ms=_ms(ttft_s),
            gen_tokens=len(stamps),
            gen_tps=_rate(stamps),
            text=text,
        )

    def _prompt_eval(self, prompt: str) -> tuple[int, float]:
        ids = self._llm.tokenize(prompt.encode("utf-8"))
        self._llm.reset()
        start = time.perf_counter()
        self._llm.eval(ids)
        return len(ids), time.perf_counter() - start

    def _generate(self, prompt: str, limit: int) -> tuple[float, list[float], str]:
        """Greedy tokens until `limit` (EOS included: the bare loop never stops by itself)."""
        llm = self._llm
        llm.reset()  # a full prompt evaluation, never a prefix-cache hit
        start = time.perf_counter()
        ids = llm.tokenize(prompt.encode("utf-8"))
        stamps: list[float] = []
        out: list[int] = []
        tokens = llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0)
        try:
            for token in tokens:
                stamps.append(time.perf_counter())
                out.append(token)
                if len(out) >= limit:
                    break
        finally:
            tokens.close()
        text = llm.detokenize(out).decode("utf-8", "replace")
        return stamps[0] - start, stamps, text


def _rate(stamps: list[float]) -> float:
    """Tokens per second between the first and the last token (n - 1 intervals)."""
    if len(stamps) < 2:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# -- TokenDock server -----------------------------------------------------------------------


@dataclass(slots=True)
class StreamResult:
    start: float
    content_stamps: list[float]  # arrival time of each chunk that carried text
    text: str
    usage: dict[str, Any]
    finish_reason: str | None
    end: float


class TokenDockClient:
    def __init__(self, server: TokenDock, model: str, prose_repeats: int = PROSE_REPEATS):
        self._client = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.key}"},
            trust_env=False,
            timeout=REQUEST_TIMEOUT,
        )
        self._model = model
        self.prose_repeats = prose_repeats

    def close(self) -> None:
        self._client.close()

    def run(self, rep: int, tokens: int) -> Sample:
        prompt = self._stream(long_prompt(rep, self.prose_repeats), 1)
        gen = self._stream(short_prompt(rep), tokens)
        return Sample(
            prompt_tokens=int(prompt.usage["prompt_tokens"]),
            prompt_ms=_ms(prompt.end - prompt.start),
            ttft_ms=_ms(gen.content_stamps[0] - gen.start),
            gen_tokens=int(gen.usage["completion_tokens"]),
            gen_tps=_chunk_rate(gen),
            text=gen.text,
        )

    def _stream(self, prompt: str, max_tokens: int) -> StreamResult:
        body = {
            "model": self._model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        lines: list[tuple[float, str]] = []
        start = time.perf_counter()
        with self._client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                raise RuntimeError(f"/v1/completions answered {resp.status_code}: {resp.text}")
            # Only timestamps while streaming: parsing waits, so the client steals no CPU.
            for line in resp.iter_lines():
                if line:
                    lines.append((time.perf_counter(), line))
        return _parse_stream(start, lines, time.perf_counter())


def _parse_stream(start: float, lines: list[tuple[float, str]], end: float) -> StreamResult:
    stamps: list[float] = []
    parts: list[str] = []
    usage: dict[str, Any] = {}
    finish: str | None = None
    for stamp, line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        if "error" in chunk:
            raise RuntimeError(f"stream error: {chunk['error']}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices", []):
            if choice.get("text"):
                stamps.append(stamp)
                parts.append(choice["text"])
            finish = choice.get("finish_reason") or finish
    if not stamps or not usage:
        raise RuntimeError(f"stream had no content or no usage chunk: {lines!r}")
    return StreamResult(start, stamps, "".join(parts), usage, finish, end)


def _chunk_rate(result: StreamResult) -> float:
    """Tokens per second from the first content chunk to the last, counted by usage."""
    span = result.content_stamps[-1] - result.content_stamps[0]
    intervals = int(result.usage["completion_tokens"]) - 1
    return intervals / span if span > 0 and intervals > 0 else float("nan")


# -- running and reporting ------------------------------------------------------------------

Runner = Callable[[int, int], Sample]

METRICS: list[tuple[str, str, str]] = [
    # (label, Sample attribute, kind: "rate" → ratio, "ms" → added milliseconds)
    ("Prompt processing (tok/s)", "prompt_tps", "rate"),
    ("Prompt latency (ms)", "prompt_ms", "ms"),
    ("Time to first token (ms)", "ttft_ms", "ms"),
    ("Generation, single stream (tok/s)", "gen_tps", "rate"),
]


def run_all(
    sides: dict[str, Runner], reps: int, tokens: int, warmup: bool = True
) -> dict[str, list[Sample]]:
    names = list(sides)
    for name in names if warmup else []:  # warm-up (rep 0), not recorded
        sides[name](0, tokens)
        time.sleep(SETTLE_SECONDS)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for rep in range(1, reps + 1):
        order = names if rep % 2 else names[::-1]
        for name in order:
            samples[name].append(sides[name](rep, tokens))
            time.sleep(SETTLE_SECONDS)
        print(f"  rep {rep}/{reps} done", file=sys.stderr)
    return samples


def median(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(float(getattr(s, attr)) for s in samples))


def summarize(samples: dict[str, list[Sample]], tokens: int) -> dict[str, Any]:
    bare, dock = samples["bare"], samples["tokendock"]
    result: dict[str, Any] = {"metrics": {}, "checks": {}}
    for label, attr, kind in METRICS:
        b, d = median(bare, attr), median(dock, attr)
        delta = d / b if kind == "rate" else d - b
        result["metrics"][attr] = {"label": label, "bare": b, "tokendock": d, kind: delta}
    gen_ratio = result["metrics"]["gen_tps"]["rate"]
    ttft_added = result["metrics"]["ttft_ms"]["ms"]
    result["checks"] = {
        "generation_ge_95pct": gen_ratio >= 0.95,
        "ttft_added_lt_5ms": ttft_added < 5.0,
        "tokendock_completion_tokens": sorted({s.gen_tokens for s in dock}),
        "all_streams_reached_tokens": all(s.gen_tokens == tokens for s in dock),
        "prompt_tokens_match": [s.prompt_tokens for s in bare] == [s.prompt_tokens for s in dock],
        "texts_match": [s.text for s in bare] == [s.text for s in dock],
    }
    return result


def markdown_table(summary: dict[str, Any]) -> str:
    rows = [
        "| metric | bare llama-cpp-python | TokenDock | ratio |",
        "|---|---:|---:|---:|",
    ]
    for m in summary["metrics"].values():
        ratio = f"{m['rate']:.3f}×" if "rate" in m else f"{m['ms']:+.1f} ms"
        rows.append(f"| {m['label']} | {m['bare']:.1f} | {m['tokendock']:.1f} | {ratio} |")
    return "\n".join(rows)


def checks_text(summary: dict[str, Any]) -> str:
    c = summary["checks"]
    gen = summary["metrics"]["gen_tps"]["rate"]
    ttft = summary["metrics"]["ttft_ms"]["ms"]
    verdict = {True: "PASS", False: "FAIL"}
    return "\n".join(
        [
            f"- generation ≥ 95 % of bare: {verdict[c['generation_ge_95pct']]} ({gen:.1%})",
            f"- TTFT added < 5 ms: {verdict[c['ttft_added_lt_5ms']]} ({ttft:+.1f} ms)",
            f"- TokenDock completion_tokens per stream: {c['tokendock_completion_tokens']}",
            f"- prompt token counts equal on both sides: {c['prompt_tokens_match']}",
            f"- greedy texts identical on both sides: {c['texts_match']}",
        ]
    )
