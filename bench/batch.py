"""`make bench-batch`: what the Batch API costs interactive work, and what it gets done (issue 21).

    .venv/bin/python -m bench.batch [--lines 500] [--upstream-lines 200] [--no-write]
    .venv/bin/python -m bench.batch --smoke     # 6 lines, seconds; no targets judged, no docs

One `tokendock serve` (127.0.0.1, a fresh SQLite data directory, bench/harness.py; stopped by
its PID at the end) with the default catalog's embedded `gemma-3-270m` plus `mock-chat`, an
upstream model on bench/batch_upstream.py (a mock answering after 200 ms that counts batch lines
and interactive requests apart) with `max_concurrency` 8 and the default `batch_share` (0.5).
Everything goes through the official `openai` SDK (bench/batch_load.py), with the bootstrap
admin's key (rate limits lifted).

1. Batch alone: a `--lines` chat batch (a common system prompt, a short question each,
   max_tokens 32, temperature 0): lines/s and completion tokens/s (the output file's usage) over
   the wall time from `batches.create` to the poll that saw `completed`.
2. The same requests sent interactively (not streamed): the first `--probe` at concurrency 4, 8
   and 16, then all of them at the best of the three (tokens/s).
3. Mixed: the same batch again while an interactive client streams counting answers (64 tokens)
   at concurrency 2 from the moment the batch is `in_progress` until it ends; then that client
   alone for as many requests (at most 100). The mixed batch is cancelled when it runs longer
   than max(60 s, 1.5 × the batch alone's wall time) (its done lines are counted). Targets:
   interactive TTFT p95 with the batch ≤ 1.25× without, median per-stream decode tokens/s
   ≥ 0.8× without, and the mixed run's aggregate tokens/s (batch + interactive completion
   tokens over the run's wall time) ≥ 0.8× the batch alone's.
4. Upstream: interactive requests to `mock-chat` at concurrency 4 alone, then a
   `--upstream-lines` batch on it while the same client runs: the mock's peak of batch lines in
   flight (target ≤ max_concurrency × batch_share = 4) and the interactive latency p95 (target
   ≤ 1.25× alone).

Targets are printed PASS / FAIL; the bench never fails on them (a benchmark reports). Writes the
"Batch API" section of docs/benchmarks.md (not with --smoke or --no-write) and
bench/results/batch-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import batch_report
from bench.batch_load import (
    BatchRun,
    batch_file,
    client_for,
    closed_loop,
    one_plain,
    run_batch,
    send_plain,
    stream_loop,
)
from bench.batch_upstream import BATCH_MARK
from bench.harness import (
    TokenDock,
    log_problems,
    machine_facts,
    run_async,
    start_tokendock,
    write_section,
)
from bench.procs import ROOT, first_json_line, start, stop, wait_http

DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Batch API (bench/batch.py)"
MODEL = "gemma-3-270m"
UPSTREAM_MODEL = "mock-chat"
UPSTREAM_CAP = 8  # the mock deployment's max_concurrency
BATCH_SHARE = 0.5  # the catalog's default batch_share
UPSTREAM_DELAY_MS = 200
DEADLINE_FACTOR = 1.5  # the mixed batch may take this times the batch alone's wall time
ALONE_CAP = 100  # streams of the interactive client alone, at most


@dataclass(frozen=True)
class Plan:
    lines: int = 500
    probe: int = 64
    levels: tuple[int, ...] = (4, 8, 16)
    max_tokens: int = 32
    stream_tokens: int = 64
    mixed_concurrency: int = 2
    upstream_lines: int = 200
    upstream_probe: int = 40
    upstream_concurrency: int = 4
    min_deadline: float = 60.0  # the mixed batch is cancelled after max(this, 1.5 × alone)
    smoke: bool = False


def catalog_text(mock_port: int) -> str:
    """The default catalog plus `mock-chat` on the counting mock, capped at UPSTREAM_CAP."""
    from tokendock.config import DEFAULT_CATALOG

    m = f'models."{UPSTREAM_MODEL}"'
    return DEFAULT_CATALOG.read_text() + (
        f'\n[{m}]\nengine = "upstream"\ncontext_length = 8192\n'
        f'[{m}.price]\ninput = "0.10"\noutput = "0.20"\n'
        f'[[{m}.deployments]]\nname = "mock"\nbase_url = "http://127.0.0.1:{mock_port}/v1"\n'
        f'model = "mock-model"\nmax_concurrency = {UPSTREAM_CAP}\n'
        f"batch_share = {BATCH_SHARE}\n"
    )


def log(text: str) -> None:
    print(text, flush=True)


def batch_dict(run: BatchRun) -> dict[str, Any]:
    return {
        **asdict(run),
        "errors": run.errors[:5],
        "wall": run.wall,
        "lines_per_s": run.lines_per_s,
        "tokens_per_s": run.tokens_per_s,
    }


async def batch_alone(td: TokenDock, plan: Plan) -> dict[str, Any]:
    client = client_for(td.base_url, td.key)
    await send_plain(client, MODEL, 2, 2, plan.max_tokens)  # warm-up: the chat template
    run = await run_batch(client, batch_file(plan.lines, MODEL, plan.max_tokens), plan.lines)
    log(f"batch alone: {batch_report.batch_line(run)}")
    return batch_dict(run)


async def interactive_sweep(td: TokenDock, plan: Plan) -> dict[str, Any]:
    """The batch's requests sent interactively: `probe` of them at each level, then all of
    them at the best level (when the probe was not all of them already)."""
    client = client_for(td.base_url, td.key)
    rows = []
    for c in plan.levels:
        t0 = time.monotonic()
        reqs = await send_plain(client, MODEL, min(plan.probe, plan.lines), c, plan.max_tokens)
        rows.append(batch_report.plain_row(c, reqs, time.monotonic() - t0))
        log(f"interactive probe: {rows[-1]}")
    best = max(rows, key=lambda r: r["tokens_per_s"])
    full = best
    if plan.probe < plan.lines:
        t0 = time.monotonic()
        reqs = await send_plain(client, MODEL, plan.lines, best["concurrency"], plan.max_tokens)
        full = batch_report.plain_row(best["concurrency"], reqs, time.monotonic() - t0)
        log(f"interactive, all {plan.lines} at c={best['concurrency']}: {full}")
    return {"probes": rows, "full": full}


async def mixed(td: TokenDock, plan: Plan, deadline: float) -> dict[str, Any]:
    """The batch again with streams at `mixed_concurrency` while it runs (cancelled after
    `deadline` seconds); then the streams alone, as many requests (at most ALONE_CAP)."""
    client = client_for(td.base_url, td.key)
    running, stop_streams = asyncio.Event(), asyncio.Event()

    async def streams() -> list[Any]:
        await running.wait()
        return await stream_loop(
            client, MODEL, plan.mixed_concurrency, plan.stream_tokens, stop=stop_streams
        )

    async def cut_streams() -> None:  # at the deadline: a cancelled batch's lines must end
        await asyncio.sleep(deadline)
        stop_streams.set()

    task = asyncio.create_task(streams())
    cutter = asyncio.create_task(cut_streams())
    data = batch_file(plan.lines, MODEL, plan.max_tokens)
    run = await run_batch(client, data, plan.lines, running, deadline)
    running.set()
    stop_streams.set()
    cutter.cancel()
    during = await task
    log(f"mixed batch: {batch_report.batch_line(run)}; {len(during)} streams during it")
    alone = await stream_loop(
        client,
        MODEL,
        plan.mixed_concurrency,
        plan.stream_tokens,
        count=min(max(len(during), 1), ALONE_CAP),
    )
    return {
        "batch": batch_dict(run),
        "with_batch": batch_report.stream_row(during),
        "alone": batch_report.stream_row(alone),
        "aggregate": batch_report.aggregate(run, during),
    }


async def upstream(td: TokenDock, plan: Plan, stats_url: str) -> dict[str, Any]:
    """Interactive requests to the upstream model alone, then beside a batch on it."""
    client = client_for(td.base_url, td.key)
    c = plan.upstream_concurrency
    alone = await send_plain(client, UPSTREAM_MODEL, plan.upstream_probe, c, plan.max_tokens)
    async with httpx.AsyncClient(trust_env=False) as http:
        await http.get(stats_url + "?reset=1")
        running, stop_plain = asyncio.Event(), asyncio.Event()

        async def interactive() -> list[Any]:
            await running.wait()
            return await closed_loop(
                c, lambda i: one_plain(client, UPSTREAM_MODEL, i, plan.max_tokens, ""), None,
                stop_plain,
            )  # fmt: skip

        task = asyncio.create_task(interactive())
        data = batch_file(plan.upstream_lines, UPSTREAM_MODEL, plan.max_tokens, BATCH_MARK.decode())
        run = await run_batch(client, data, plan.upstream_lines, running, plan.min_deadline * 2)
        running.set()
        stop_plain.set()
        during = await task
        counts = (await http.get(stats_url)).json()
    log(f"upstream batch: {batch_report.batch_line(run)}; mock counts {counts}")
    return {
        "batch": batch_dict(run),
        "alone": batch_report.latency_row(alone),
        "with_batch": batch_report.latency_row(during),
        "mock": counts,
        "cap": UPSTREAM_CAP,
        "share": BATCH_SHARE,
    }


def run_all(plan: Plan, tmp: Path) -> dict[str, Any]:
    facts = machine_facts()
    mock_cmd = [sys.executable, "-m", "bench.batch_upstream", "--port", "0"]
    mock_cmd += ["--delay-ms", str(UPSTREAM_DELAY_MS), "--models", "mock-model"]
    mock = start("batch-mock", mock_cmd, tmp / "mock.log")
    td: TokenDock | None = None
    try:
        port = int(first_json_line(mock, 20)["port"])
        wait_http(f"http://127.0.0.1:{port}/health", mock, 20)
        catalog = tmp / "models.toml"
        catalog.write_text(catalog_text(port))
        td = start_tokendock(tmp, catalog=catalog)
        log(f"TokenDock pid {td.pid} at {td.base_url}; mock upstream pid {mock.pid}")
        t0 = time.monotonic()
        out: dict[str, Any] = {"machine": facts, "plan": asdict(plan)}
        out["alone"] = run_async(batch_alone(td, plan))
        out["interactive"] = run_async(interactive_sweep(td, plan))
        deadline = max(plan.min_deadline, DEADLINE_FACTOR * out["alone"]["wall"])
        out["mixed"] = run_async(mixed(td, plan, deadline))
        out["mixed"]["deadline"] = deadline
        stats = f"http://127.0.0.1:{port}/batch-stats"
        out["upstream"] = run_async(upstream(td, plan, stats))
        out["seconds"] = time.monotonic() - t0
        stop(td.proc)
        out["ledger_verify"] = td.ledger_verify()
        out["log"] = log_problems(td.proc.log)
        return out
    finally:
        if td is not None:
            stop(td.proc)
        stop(mock)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--lines", type=int, default=500, help="lines of the embedded batch (500)")
    p.add_argument("--probe", type=int, default=64, help="requests per interactive level (64)")
    p.add_argument("--upstream-lines", type=int, default=200, help="lines of the upstream batch")
    p.add_argument("--no-write", action="store_true", help="print only; docs untouched")
    p.add_argument("--smoke", action="store_true", help="6 lines, no targets, docs untouched")
    p.add_argument("--json", type=Path, help="results JSON (default bench/results/batch-*.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a timeout, make interrupted) unwinds like an error: the servers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        plan = Plan(
            lines=6,
            probe=6,
            levels=(4,),
            max_tokens=8,
            stream_tokens=16,
            upstream_lines=6,
            upstream_probe=8,
            min_deadline=12.0,
            smoke=True,
        )
    else:
        plan = Plan(lines=args.lines, probe=args.probe, upstream_lines=args.upstream_lines)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="td-bench-batch-") as tmp:
        results = run_all(plan, Path(tmp))
    given = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--smoke")
    text = batch_report.section(results, f" BENCH_ARGS='{given}'" if given else "")
    log("\n" + text)
    if args.smoke:
        log("smoke run: no targets judged, docs/benchmarks.md left as it is")
        return 0
    path = args.json or ROOT / "bench" / "results" / f"batch-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {path}")
    if not args.no_write:
        write_section(DOC, "batch", text, intro=HEADING)
        log(f"wrote the section to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
