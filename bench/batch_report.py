"""Rows and the docs section of bench/batch.py: summaries of request lists, the targets judged
PASS / FAIL (never asserted: a benchmark reports), and the markdown of the "Batch API" section
of docs/benchmarks.md."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.batch_load import BatchRun, Request, percentile

TTFT_RATIO = 1.25  # interactive TTFT p95 with the batch / without, at most
DECODE_RATIO = 0.8  # per-stream tokens/s with the batch / without, at least
AGGREGATE_RATIO = 0.8  # mixed aggregate tokens/s / the batch alone's, at least
LATENCY_RATIO = 1.25  # upstream interactive latency p95 with the batch / without, at most


def batch_line(run: BatchRun) -> str:
    return (
        f"{run.status}, {run.succeeded}/{run.lines} lines ok, {run.failed} failed, "
        f"{run.wall:.1f} s, {run.lines_per_s:.2f} lines/s, {run.tokens_per_s:.1f} tok/s"
    )


def ok(reqs: list[Request]) -> list[Request]:
    return [r for r in reqs if r.error is None]


def first_errors(reqs: list[Request]) -> list[str]:
    return sorted({r.error for r in reqs if r.error})[:3]


def plain_row(concurrency: int, reqs: list[Request], wall: float) -> dict[str, Any]:
    tokens = sum(r.tokens for r in ok(reqs))
    return {
        "concurrency": concurrency,
        "requests": len(reqs),
        "errors": len(reqs) - len(ok(reqs)),
        "first_errors": first_errors(reqs),
        "tokens": tokens,
        "wall": wall,
        "tokens_per_s": tokens / wall if wall > 0 else math.nan,
        "requests_per_s": len(ok(reqs)) / wall if wall > 0 else math.nan,
    }


def stream_row(reqs: list[Request]) -> dict[str, Any]:
    good = ok(reqs)
    ttft = [r.ttft_ms for r in good if r.ttft_ms is not None]
    decode = [r.decode_tps for r in good if r.decode_tps is not None]
    return {
        "requests": len(reqs),
        "errors": len(reqs) - len(good),
        "first_errors": first_errors(reqs),
        "tokens": sum(r.tokens for r in good),
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
        "decode_p50": statistics.median(decode) if decode else math.nan,
        "decode_p5": percentile(decode, 5),
    }


def latency_row(reqs: list[Request]) -> dict[str, Any]:
    good = ok(reqs)
    ms = [(r.end - r.start) * 1000 for r in good]
    return {
        "requests": len(reqs),
        "errors": len(reqs) - len(good),
        "first_errors": first_errors(reqs),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "max_ms": max(ms) if ms else math.nan,
    }


def aggregate(run: BatchRun, during: list[Request]) -> dict[str, Any]:
    """Batch and interactive completion tokens over the mixed run's wall time (the batch
    created → the later of its end and the last interactive stream's)."""
    end = max([run.ended, *(r.end for r in during)])
    tokens = run.completion_tokens + sum(r.tokens for r in ok(during))
    wall = end - run.started
    return {"tokens": tokens, "wall": wall, "tokens_per_s": tokens / wall if wall else math.nan}


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def verdict(passed: bool, smoke: bool) -> str:
    return "not judged (smoke)" if smoke else ("PASS" if passed else "FAIL")


def targets(r: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(what, measured ratio, verdict) of every target."""
    smoke = r["plan"]["smoke"]
    m, up = r["mixed"], r["upstream"]
    ttft = ratio(m["with_batch"]["ttft_p95"], m["alone"]["ttft_p95"])
    decode = ratio(m["with_batch"]["decode_p50"], m["alone"]["decode_p50"])
    agg = ratio(m["aggregate"]["tokens_per_s"], r["alone"]["tokens_per_s"])
    lat = ratio(up["with_batch"]["p95_ms"], up["alone"]["p95_ms"])
    cap = math.floor(up["cap"] * up["share"])
    peak = up["mock"]["batch"]["peak_inflight"]
    return [
        (f"interactive TTFT p95, with / without the batch ≤ {TTFT_RATIO}×", ttft,
         verdict(ttft <= TTFT_RATIO, smoke)),
        (f"per-stream decode tokens/s (median), with / without ≥ {DECODE_RATIO}×", decode,
         verdict(decode >= DECODE_RATIO, smoke)),
        (f"aggregate tokens/s, mixed / batch alone ≥ {AGGREGATE_RATIO}×", agg,
         verdict(agg >= AGGREGATE_RATIO, smoke)),
        (f"upstream: batch lines in flight at the mock ≤ {cap} (max_concurrency {up['cap']} × "
         f"batch_share {up['share']})", float(peak), verdict(peak <= cap, smoke)),
        (f"upstream: interactive latency p95, with / without the batch ≤ {LATENCY_RATIO}×", lat,
         verdict(lat <= LATENCY_RATIO, smoke)),
    ]  # fmt: skip


def fmt(x: float, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def header(r: dict[str, Any], args: str) -> str:
    m, p = r["machine"], r["plan"]
    return (
        f"**`make bench-batch{args}`** — {m['date']}, commit {m['commit']}; {m['nproc']} CPUs "
        f"(`{m['cpu']}`), load average before the run {m['loadavg_before']}; Python "
        f"{m['python']}; gemma-3-270m (the default catalog, 16 slots); took {r['seconds']:.0f} s. "
        f"One `tokendock serve`, SQLite, the official `openai` SDK (AsyncOpenAI) on the same "
        f"machine. Batch: {p['lines']} chat lines, a common system prompt and a short question "
        f"each, max_tokens {p['max_tokens']}, temperature 0; wall time = `batches.create` → the "
        f"poll (every 0.25 s) that saw `completed`; tokens = completion tokens of the output "
        f"file's usage."
    )


def engine_tables(r: dict[str, Any]) -> list[str]:
    a, inter, m = r["alone"], r["interactive"], r["mixed"]
    lines = [
        "| run | lines / requests | ok | wall (s) | lines/s | completion tok/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| batch alone | {a['lines']} | {a['succeeded']} | {fmt(a['wall'])} | "
        f"{fmt(a['lines_per_s'], 2)} | {fmt(a['tokens_per_s'])} |",
    ]
    full = [] if inter["full"] in inter["probes"] else [inter["full"]]
    for row in [*inter["probes"], *full]:
        best = " (the best level, every request)" if row in full else ""
        lines.append(
            f"| interactive, not streamed, c = {row['concurrency']}{best} | {row['requests']} | "
            f"{row['requests'] - row['errors']} | {fmt(row['wall'])} | "
            f"{fmt(row['requests_per_s'], 2)} | {fmt(row['tokens_per_s'])} |"
        )
    mb = m["batch"]
    lines += [
        f"| batch with the streams beside it | {mb['lines']} | {mb['succeeded']} | "
        f"{fmt(mb['wall'])} | {fmt(mb['lines_per_s'], 2)} | {fmt(mb['tokens_per_s'])} |",
        f"| mixed aggregate (batch + streams) | – | – | {fmt(m['aggregate']['wall'])} | – | "
        f"{fmt(m['aggregate']['tokens_per_s'])} |",
        "",
        f"Batch alone / the same requests sent interactively at the best concurrency "
        f"({inter['full']['concurrency']}): "
        f"{fmt(ratio(a['tokens_per_s'], inter['full']['tokens_per_s']), 2)}× the tokens/s.",
        "",
        f"Interactive streams at concurrency {r['plan']['mixed_concurrency']} "
        f"({r['plan']['stream_tokens']}-token counting answers), while the batch ran and alone "
        "(as many requests, at most 100); decode tokens/s = (completion tokens − 1) / "
        "(last chunk − first chunk with text), per stream:",
        "",
        "| interactive | requests | errors | TTFT p50 (ms) | TTFT p95 (ms) | decode tok/s median "
        "| decode tok/s p5 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in (("with the batch", m["with_batch"]), ("alone", m["alone"])):
        lines.append(
            f"| {name} | {row['requests']} | {row['errors']} | {fmt(row['ttft_p50'], 0)} | "
            f"{fmt(row['ttft_p95'], 0)} | {fmt(row['decode_p50'])} | {fmt(row['decode_p5'])} |"
        )
    return lines


def upstream_table(r: dict[str, Any]) -> list[str]:
    up, p = r["upstream"], r["plan"]
    mock = up["mock"]
    return [
        f"Upstream: `mock-chat` on a mock answering after 200 ms (bench/batch_upstream.py), "
        f"`max_concurrency = {up['cap']}`, `batch_share = {up['share']}`; a "
        f"{p['upstream_lines']}-line batch ({batch_line_of(up['batch'])}) while interactive "
        f"requests ran at concurrency {p['upstream_concurrency']}. Peak in flight at the mock: "
        f"batch lines {mock['batch']['peak_inflight']}, interactive "
        f"{mock['interactive']['peak_inflight']}.",
        "",
        "| interactive, upstream | requests | errors | latency p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {row['requests']} | {row['errors']} | {fmt(row['p50_ms'], 0)} | "
            f"{fmt(row['p95_ms'], 0)} | {fmt(row['max_ms'], 0)} |"
            for name, row in (("alone", up["alone"]), ("with the batch", up["with_batch"]))
        ),
    ]


def batch_line_of(b: dict[str, Any]) -> str:
    return f"{b['status']}, {b['succeeded']}/{b['lines']} ok in {fmt(b['wall'])} s"


def section(r: dict[str, Any], args: str) -> str:
    lines = [header(r, args), "", *engine_tables(r), "", *upstream_table(r), ""]
    lines += ["| target | measured | verdict |", "|---|---:|---|"]
    lines += [f"| {what} | {fmt(value, 2)} | {v} |" for what, value, v in targets(r)]
    notes = [f"ledger verify (after the server stopped): exit {r['ledger_verify'][0]}", r["log"]]
    mb = r["mixed"]["batch"]
    if mb["cut"]:
        notes.insert(0, f"the mixed batch was cancelled by the bench at its deadline "
                     f"({r['mixed']['deadline']:.0f} s = max(60 s, 1.5 × the batch alone's wall "
                     f"time)): {mb['succeeded']} of {mb['lines']} lines were done; its rows "
                     "above count those only")  # fmt: skip
    for name, run in (("batch alone", r["alone"]), ("mixed batch", r["mixed"]["batch"])):
        if run["errors"]:
            notes.append(f"{name} errors: {run['errors'][:2]}")
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines)
