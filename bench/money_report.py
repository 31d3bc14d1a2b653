"""The figures of bench/money.py: percentiles, one summary per run, the Markdown table and the
targets judged (requests/s under load, the p50 added uncontended)."""

from __future__ import annotations

from typing import Any

from bench.money_load import RunResult

TARGET_RPS = {"sqlite": 1500.0, "postgresql": 1000.0}
TARGET_P50_MS = 0.5


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


def summary(r: RunResult) -> dict[str, Any]:
    return {
        "backend": r.backend,
        "concurrency": r.concurrency,
        "accounts": r.accounts,
        "seconds": r.seconds,
        "requests_per_s": r.rps,
        "completed_in_window": r.completed_in_window,
        "completed_total": r.completed_total,
        "errors": r.errors,
        "admission_ms": stats(r.admission_ms),
        "settlement_ms": stats(r.settlement_ms),
        "added_ms": stats(r.added_ms),
        "process_cpu_pct": r.process_cpu_pct,
        "machine_busy_pct": r.machine_busy_pct,
        "loadavg_after": r.loadavg_after,
        "jobs_per_commit": r.jobs_per_commit,
        "checks": r.checks,
    }


def markdown_table(runs: list[dict[str, Any]]) -> str:
    def pair(s: dict[str, float]) -> str:
        return f"{s['p50']:.2f} / {s['p99']:.2f}"

    lines = [
        "| backend | tasks | accounts | requests/s | admission p50 / p99 (ms) | "
        "settlement p50 / p99 (ms) | added p50 / p99 (ms) | CPU: bench / machine | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['backend']} | {r['concurrency']} | {r['accounts']} | "
            f"{r['requests_per_s']:,.0f} | {pair(r['admission_ms'])} | "
            f"{pair(r['settlement_ms'])} | {pair(r['added_ms'])} | "
            f"{r['process_cpu_pct']:.0f} % / {r['machine_busy_pct']:.0f} % | "
            f"{sum(r['errors'].values())} |"
        )
    return "\n".join(lines)


def verdicts(runs: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for backend, target in TARGET_RPS.items():
        loaded = [r for r in runs if r["backend"] == backend and r["concurrency"] == concurrency]
        single = [r for r in runs if r["backend"] == backend and r["concurrency"] == 1]
        if loaded:
            rps = loaded[0]["requests_per_s"]
            out.append(
                {
                    "target": f"{backend}: ≥ {target:,.0f} requests/s at {concurrency} tasks",
                    "value": f"{rps:,.0f} requests/s",
                    "pass": rps >= target,
                }
            )
        # Latency is a target uncontended only: with N tasks in a closed loop the p50 is about
        # N / throughput (Little's law), 64 / 2,000 requests/s = 32 ms, whatever the ledger does.
        if single:
            p50 = single[0]["added_ms"]["p50"]
            out.append(
                {
                    "target": f"{backend}: p50 added < {TARGET_P50_MS} ms, uncontended (1 task)",
                    "value": f"{p50:.3f} ms",
                    "pass": p50 < TARGET_P50_MS,
                }
            )
    return out
