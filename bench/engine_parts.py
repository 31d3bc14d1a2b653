"""The parts of bench/engine.py, each with the servers it starts and stops.

* `main_part`: TokenDock and (when built) llama.cpp's `llama-server`, both up at once. First
  the single stream (bare llama-cpp-python in this process against TokenDock; llama-server
  idle), then side by side, alternating per level (bench/engine_sides.py): the completions
  levels, the streamed chat rows, prefix reuse, a py-spy profile of TokenDock's engine thread
  during one more level at the burst concurrency (not a measured one), and last the bursts, in
  the same server processes that served all of the above.
* `llama_cpp_python_part`: `python -m llama_cpp.server`, its levels and prefix pairs.
* `deterministic_part`: TokenDock again with `deterministic = true` in its catalog entry, its
  levels only (no target is judged on it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.engine_load import SYSTEM_REPEATS, Client, prefix_pairs, run_level, sweep
from bench.engine_profile import EngineProfile, profile_engine
from bench.engine_report import ServerRun
from bench.engine_servers import (
    Memory,
    cpp_llama_server,
    llama_cpp_python_server,
    slots_in_catalog,
    tokendock,
)
from bench.engine_sides import BurstPlan, Side, alternate_sweep, bursts, chat_rows
from bench.engine_single import (
    PROSE_REPEATS,
    SMOKE_PROSE_REPEATS,
    BareLlama,
    Runner,
    Sample,
    TokenDockClient,
    run_all,
)
from bench.harness import TokenDock

N_CTX = 4096  # TokenDock's context_length for the model; every other side gets the same
DOCK, REFERENCE, PYTHON_SERVER = "TokenDock", "llama-server", "llama_cpp.server"
DETERMINISTIC = "TokenDock (deterministic)"
# The single stream used counting prompts 0…reps: the levels start past them (no prefix-cache
# hit on a prompt seen before); 37 × n mod 850 keeps the next 850 prompts distinct.
SWEEP_FIRST_PROMPT = 100


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def requests_for(args: argparse.Namespace, levels: list[int]) -> dict[int, int]:
    return {c: max(args.min_requests, args.rounds * c) for c in levels}


def burst_plan(args: argparse.Namespace) -> BurstPlan:
    return BurstPlan(
        args.bursts, args.burst_big, args.burst_big_requests, 1, args.burst_small_requests
    )


@dataclass
class MainResult:
    samples: dict[str, list[Sample]]
    runs: list[ServerRun]
    slots: int | None
    profile: EngineProfile | None
    profiled: str


def _prefix(args: argparse.Namespace, side: Side) -> None:
    repeats = 1 if args.smoke else SYSTEM_REPEATS  # --smoke: a ~130-token system prompt
    side.run.prefix = prefix_pairs(side.client, args.pairs, args.prefix_tokens, repeats)
    side.run.prefix_tokens = args.prefix_tokens
    for p in side.run.prefix:
        log(
            f"  {side.run.name}: cold {p.cold.ttft_ms or 0:.0f} ms → "
            f"repeat {p.repeat.ttft_ms or 0:.0f} ms"
        )


def _single(
    args: argparse.Namespace, server: TokenDock, bare: BareLlama
) -> dict[str, list[Sample]]:
    repeats = SMOKE_PROSE_REPEATS if args.smoke else PROSE_REPEATS
    single = TokenDockClient(server, args.model, repeats)
    try:
        sides: dict[str, Runner] = {"bare": bare.run, "tokendock": single.run}
        log(f"single stream: {args.reps} reps, {args.tokens} tokens")
        return run_all(sides, args.reps, args.tokens, warmup=not args.smoke)
    finally:
        single.close()


def _side_by_side(
    args: argparse.Namespace, sides: list[Side], pid: int, tmp: Path
) -> tuple[EngineProfile | None, str]:
    """Levels, chat rows, prefix reuse, the profile, the bursts (in that order)."""
    log(f"side by side: {', '.join(s.run.name for s in sides)}, {args.load_tokens} tokens")
    reqs = requests_for(args, args.levels)
    first = alternate_sweep(sides, reqs, args.load_tokens, log, first=SWEEP_FIRST_PROMPT)
    log(f"streamed chat completions at {args.chat_levels}")
    chat_rows(sides, args.chat_levels, requests_for(args, args.chat_levels), args.load_tokens, log)
    for side in sides:
        _prefix(args, side)
    profile, profiled = None, ""
    if args.profile:
        c = args.burst_big
        n = max(args.min_requests, args.rounds * c)
        profiled = f"one more level of {n} requests at concurrency {c} (not a measured one)"
        log(f"profile: {profiled}, py-spy for {args.profile_seconds:.0f} s")
        dock = sides[0].client

        def work() -> None:
            asyncio.run(run_level(dock, c, n, args.load_tokens, first))

        profile = profile_engine(pid, args.profile_seconds, tmp, work, install=not args.smoke)
        first += n
    plan = burst_plan(args)
    log(
        f"bursts: {plan.count}, concurrency {plan.big} ×{plan.big_requests}, "
        f"1 ×{plan.small_requests}"
    )
    bursts(sides, plan, args.load_tokens, first, log)
    return profile, profiled


def main_part(args: argparse.Namespace, tmp: Path, binary: Path | None) -> MainResult:
    """TokenDock (and llama-server when `binary`): the single stream, then side by side."""
    also = " and llama-server" if binary else ""
    log(f"loading bare llama-cpp-python and starting TokenDock{also}…")
    repeats = SMOKE_PROSE_REPEATS if args.smoke else PROSE_REPEATS
    bare: BareLlama | None = BareLlama(args.model_path, args.threads, repeats)
    dock_run, ref_run = ServerRun(DOCK), ServerRun(REFERENCE)
    mems: list[tuple[ServerRun, Memory]] = []
    try:
        with ExitStack() as stack:
            server = stack.enter_context(tokendock(tmp, args.model, args.slots, args.threads))
            slots = slots_in_catalog(tmp / "tokendock-models.toml")
            sides = [Side(dock_run, Client(server.base_url, args.model, server.key), args.levels)]
            if binary is not None:
                ref = stack.enter_context(
                    cpp_llama_server(tmp, binary, args.model_path, args.slots, N_CTX, args.threads)
                )
                client = Client(ref.base_url, args.model, extra={"ignore_eos": True})
                sides.append(Side(ref_run, client, args.ref_levels))
            procs = [server.proc] + ([ref.proc] if binary is not None else [])
            for run, proc in zip((dock_run, ref_run), procs, strict=False):
                others = tuple(p for p in procs if p is not proc)
                mems.append((run, stack.enter_context(Memory(proc, also_ours=others))))
            assert bare is not None
            samples = _single(args, server, bare)
            bare.close()
            bare = None
            profile, profiled = _side_by_side(args, sides, server.pid, tmp)
    finally:
        if bare is not None:
            bare.close()
    for run, memory in mems:
        run.peak_rss_mb, run.max_sampled_rss_mb = memory.peak_mb(), memory.max_sampled_mb()
        run.others_cpu_pct = memory.others_pct()
    runs = [dock_run] + ([ref_run] if binary is not None else [])
    return MainResult(samples, runs, slots, profile, profiled)


def llama_cpp_python_part(args: argparse.Namespace, tmp: Path) -> ServerRun:
    log("starting python -m llama_cpp.server…")
    run = ServerRun(PYTHON_SERVER)
    with llama_cpp_python_server(tmp, args.model_path, N_CTX, args.threads) as server:
        with Memory(server.proc) as memory:
            side = Side(run, Client(server.base_url, args.model), args.ref_levels)
            reqs = requests_for(args, args.ref_levels)
            run.levels = sweep(side.client, args.ref_levels, reqs, args.load_tokens, log)
            _prefix(args, side)
        run.peak_rss_mb, run.max_sampled_rss_mb = memory.peak_mb(), memory.max_sampled_mb()
        run.others_cpu_pct = memory.others_pct()
    return run


def deterministic_part(args: argparse.Namespace, tmp: Path) -> ServerRun:
    log("starting TokenDock with deterministic = true…")
    run = ServerRun(DETERMINISTIC)
    with tokendock(tmp, args.model, args.slots, args.threads, deterministic=True) as server:
        with Memory(server.proc) as memory:
            client = Client(server.base_url, args.model, server.key)
            reqs = requests_for(args, args.ref_levels)
            run.levels = sweep(client, args.ref_levels, reqs, args.load_tokens, log)
        run.peak_rss_mb, run.max_sampled_rss_mb = memory.peak_mb(), memory.max_sampled_mb()
        run.others_cpu_pct = memory.others_pct()
    return run
