"""Engine benchmark: bare llama-cpp-python, TokenDock and llama-cpp-python's own server, one run.

Same model file, same llama.cpp thread count everywhere; one server at a time:

1. Single stream (bench/engine_single.py): bare llama-cpp-python in this process against the
   TokenDock server, alternating repetitions: prompt processing, time to first token (TTFT),
   generation tokens/s.
2. TokenDock, concurrency 1, 2, 4, 8, 16 (bench/engine_load.py): aggregate generation tokens/s,
   TTFT p50 / p95, complete vs cut-short requests; then prefix reuse (a ~400-token shared system
   prompt, cold, then a repeat with another user message). Peak RSS of the server from /proc.
   TokenDock runs with its own catalog: the default entry with `slots` (default 16) and
   `threads` set (bench/engine_servers.py).
3. `python -m llama_cpp.server` with the same model, context and threads: the same sweep and
   the same prefix pairs, for comparison (no target is judged on it).

Targets (issue 13), printed as PASS/FAIL: TokenDock at concurrency 4 ≥ 1.6× and at 16 ≥ 3× its
concurrency-1 aggregate with every request complete; single stream ≥ 95 % of bare
llama-cpp-python and TTFT added < 5 ms; the repeat reaches its first token ≥ 3× faster than
the cold request. Writes the results between the markers of docs/benchmarks.md's engine section
and the plot docs/bench-engine-concurrency.svg (not with --smoke or --no-write).

Run from the repository root: `make bench-engine` (= `.venv/bin/python -m bench.engine`).
`--smoke` runs seconds of each part (concurrency 1 and 2, a few tokens) and judges no target.
Servers bind 127.0.0.1 and are stopped by PID at the end, on errors, on SIGTERM and when the
run exceeds `--deadline` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.engine_load import SYSTEM_REPEATS, Client, Level, prefix_pairs, sweep
from bench.engine_report import DOC, SVG, ServerRun, results_markdown, svg, targets
from bench.engine_servers import Memory, llama_server, slots_in_catalog, tokendock
from bench.engine_single import (
    MODEL_ID,
    MODEL_PATH,
    PROSE_REPEATS,
    SMOKE_PROSE_REPEATS,
    SMOKE_TOKENS,
    BareLlama,
    Runner,
    Sample,
    TokenDockClient,
    run_all,
    summarize,
)
from bench.harness import commit, cpu_model, write_section
from bench.procs import stop_all

LEVELS = [1, 2, 4, 8, 16]
SMOKE_LEVELS = [1, 2]
N_CTX = 4096  # TokenDock's context_length for the model; llama_cpp.server gets the same
LOAD_WARN = 1.5


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="single-stream repetitions (5)")
    p.add_argument("--tokens", type=int, default=128, help="single-stream tokens (128)")
    p.add_argument("--load-tokens", type=int, default=64, help="tokens per concurrent request")
    p.add_argument("--rounds", type=int, default=2, help="requests per worker at each level (2)")
    p.add_argument("--min-requests", type=int, default=8, help="requests per level at least (8)")
    p.add_argument("--pairs", type=int, default=3, help="prefix-reuse pairs (cold, repeat)")
    p.add_argument("--prefix-tokens", type=int, default=8, help="tokens per prefix request")
    p.add_argument("--slots", type=int, default=16, help="TokenDock's catalog `slots` (16)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads; 0 = all cores")
    p.add_argument("--deadline", type=float, default=900, help="stop everything after (s)")
    p.add_argument("--json", type=Path, help="also write every result as JSON here")
    p.add_argument("--no-write", action="store_true", help="leave docs/ as it is")
    p.add_argument("--model", default=MODEL_ID, help="public model id on TokenDock")
    p.add_argument("--model-path", type=Path, default=MODEL_PATH, help="the same GGUF")
    p.add_argument("--smoke", action="store_true", help="seconds per part, no targets judged")
    args = p.parse_args(argv)
    args.levels = SMOKE_LEVELS if args.smoke else LEVELS
    if args.smoke:
        args.reps, args.tokens, args.load_tokens = 1, SMOKE_TOKENS, 8
        args.rounds, args.min_requests, args.pairs, args.prefix_tokens = 1, 1, 1, 4
        args.deadline = min(args.deadline, 240)
    args.threads = args.threads or os.cpu_count() or 1
    if args.reps < 1 or args.tokens < 2 or args.load_tokens < 2:
        p.error("--reps must be ≥ 1, --tokens and --load-tokens ≥ 2")
    if not args.model_path.is_file():
        p.error(f"{args.model_path} is missing: run `.venv/bin/tokendock models fetch`")
    return args


def requests_for(args: argparse.Namespace) -> dict[int, int]:
    return {c: max(args.min_requests, args.rounds * c) for c in args.levels}


def load_part(args: argparse.Namespace, client: Client, run: ServerRun) -> None:
    log(f"{run.name}: concurrency {args.levels}, {args.load_tokens} tokens per request")
    run.levels = sweep(client, args.levels, requests_for(args), args.load_tokens, log)
    log(f"{run.name}: prefix reuse, {args.pairs} pairs")
    repeats = 1 if args.smoke else SYSTEM_REPEATS  # --smoke: a ~130-token system prompt
    run.prefix = prefix_pairs(client, args.pairs, args.prefix_tokens, repeats)
    run.prefix_tokens = args.prefix_tokens
    for p in run.prefix:
        log(f"  cold {p.cold.ttft_ms or 0:.0f} ms → repeat {p.repeat.ttft_ms or 0:.0f} ms")


def tokendock_part(
    args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, list[Sample]], ServerRun, int | None]:
    log("loading bare llama-cpp-python and starting TokenDock…")
    repeats = SMOKE_PROSE_REPEATS if args.smoke else PROSE_REPEATS
    bare: BareLlama | None = BareLlama(args.model_path, args.threads, repeats)
    run = ServerRun("TokenDock")
    try:
        with tokendock(tmp, args.model, args.slots, args.threads) as server:
            slots = slots_in_catalog(tmp / "engine-bench-models.toml")
            with Memory(server.proc) as memory:
                single = TokenDockClient(server, args.model, repeats)
                try:
                    assert bare is not None
                    sides: dict[str, Runner] = {"bare": bare.run, "tokendock": single.run}
                    log(f"single stream: {args.reps} reps, {args.tokens} tokens")
                    samples = run_all(sides, args.reps, args.tokens, warmup=not args.smoke)
                finally:
                    single.close()
                bare.close()
                bare = None
                load_part(args, Client(server.base_url, args.model, server.key), run)
            run.peak_rss_mb, run.max_sampled_rss_mb = memory.peak_mb(), memory.max_sampled_mb()
            run.others_cpu_pct = memory.others_pct()
    finally:
        if bare is not None:
            bare.close()
    return samples, run, slots


def llama_server_part(args: argparse.Namespace, tmp: Path) -> ServerRun:
    log("starting python -m llama_cpp.server…")
    run = ServerRun("llama_cpp.server")
    with llama_server(tmp, args.model_path, N_CTX, args.threads) as server:
        with Memory(server.proc) as memory:
            load_part(args, Client(server.base_url, args.model), run)
        run.peak_rss_mb, run.max_sampled_rss_mb = memory.peak_mb(), memory.max_sampled_mb()
        run.others_cpu_pct = memory.others_pct()
    return run


def _stop_with(code: int) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(code)  # unwinds through the finally blocks: the servers are stopped

    return handler


def meta(args: argparse.Namespace, slots: int | None, started: float, load: str) -> dict[str, Any]:
    flags = " ".join(a for a in (sys.argv[1:] if __name__ == "__main__" else []))
    return {
        "command": "make bench-engine" + (f" BENCH_ARGS='{flags}'" if flags else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit() or "?",
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load": load,
        "python": platform.python_version(),
        "llama_cpp": version("llama-cpp-python"),
        "model": args.model,
        "model_file": args.model_path.name,
        "threads": args.threads,
        "slots": slots if slots is not None else "not set (this checkout's catalog has no key)",
        "reps": args.reps,
        "tokens": args.tokens,
        "load_tokens": args.load_tokens,
        "prefix_tokens": args.prefix_tokens,
        "took_s": time.monotonic() - started,
    }


def smoke_verdict(single: dict[str, Any], runs: list[ServerRun], tokens: int) -> int:
    """--smoke judges no target: it fails only when a part did not do the work asked."""
    c = single["checks"]
    dock, llama = runs
    dock_ok = all(lv.cut_short == 0 for lv in dock.levels) and dock.prefix_complete()
    llama_ok = any(o.tokens > 0 for lv in llama.levels for o in lv.outcomes)
    ok = c["all_streams_reached_tokens"] and c["prompt_tokens_match"] and dock_ok and llama_ok
    print(
        f"smoke run (no targets judged): single stream {c['tokendock_completion_tokens']} of "
        f"{tokens} tokens, prompt tokens equal: {c['prompt_tokens_match']}; TokenDock requests "
        f"all complete: {dock_ok}; llama_cpp.server streamed tokens: {llama_ok} → "
        f"{'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


def level_json(lv: Level) -> dict[str, Any]:
    return {
        "concurrency": lv.concurrency,
        "aggregate_tps": lv.aggregate_tps,
        "completed": lv.completed,
        "cut_short": lv.cut_short,
        "ttft_p50_ms": lv.ttft_ms(0.5),
        "ttft_p95_ms": lv.ttft_ms(0.95),
        **dataclasses.asdict(lv),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_with(128 + signal.SIGTERM))
    signal.signal(signal.SIGALRM, _stop_with(124))
    signal.alarm(int(args.deadline))
    started = time.monotonic()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    if os.getloadavg()[0] > LOAD_WARN and not args.smoke:
        log(f"warning: load average {load}: other work on the machine shows in the numbers")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp_dir:
            tmp = Path(tmp_dir)
            samples, dock, slots = tokendock_part(args, tmp)
            time.sleep(1.0)  # the TokenDock process is gone before the next server starts
            llama = llama_server_part(args, tmp)
    finally:
        signal.alarm(0)
        stop_all()
    runs = [dock, llama]
    single = summarize(samples, args.tokens)
    info = meta(args, slots, started, load)
    checks = [] if args.smoke else targets(single, dock)
    text = results_markdown(info, single, runs, checks)
    print("\n" + text)
    if args.json:
        doc = {
            "meta": info,
            "single": single,
            "servers": {
                r.name: {
                    "levels": [level_json(lv) for lv in r.levels],
                    "prefix": [dataclasses.asdict(p) for p in r.prefix],
                    "peak_rss_mb": r.peak_rss_mb,
                    "max_sampled_rss_mb": r.max_sampled_rss_mb,
                    "others_cpu_pct": r.others_cpu_pct,
                }
                for r in runs
            },
        }
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    if args.smoke:
        return smoke_verdict(single, runs, args.tokens)
    if args.no_write:
        print("--no-write: docs/ left as it is")
    else:
        subtitle = (
            f"{info['model']}, {args.threads} threads, {args.load_tokens} tokens per request, "
            f"{info['date']}, {info['cpu']}"
        )
        SVG.write_text(svg(runs, "Aggregate generation tokens/s vs concurrency", subtitle))
        write_section(DOC, "engine", text)
        print(f"wrote docs/benchmarks.md (engine results) and {SVG.relative_to(SVG.parents[1])}")
    return 0  # the PASS/FAIL lines are the verdict, as in the other benches


if __name__ == "__main__":
    sys.exit(main())
