"""The soak's numbers: per-minute rows, the judgements, Markdown, docs/reliability.md."""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.harness import log_problems, machine_facts, write_section

FLAT = 0.05  # RSS and open files: per-minute medians within ±5 % of the first judged minute
P99_SLACK = 0.20  # the last minute's p99 at most 20 % above the first judged minute's
UPSTREAM_KINDS = {"up", "up_stream", "limited"}
EMBEDDED_KINDS = {"emb", "emb_stream"}
OUTCOMES = ("ok", "refused_402", "refused_429", "disconnected", "unexpected")

__all__ = ["log_problems", "meta", "render", "summarize", "update_doc"]


def meta(args: argparse.Namespace, started: dt.datetime) -> dict[str, Any]:
    return {
        **machine_facts(),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python", "-m", "bench.soak", *sys.argv[1:]]),
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median(samples: list[dict[str, float]], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


def bucket_rows(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    size = args.bucket_seconds
    n = max(1, round(args.minutes * 60 / size))
    rows = []
    for b in range(n):
        lo, hi = b * size, (b + 1) * size
        reqs = [r for r in results["requests"] if lo <= r[0] < hi or (b == n - 1 and r[0] >= hi)]
        samples = [s for s in results["samples"] if lo <= s["t"] < hi]
        ok = [r for r in reqs if r[4] == "ok"]
        cpu = (
            100
            * (samples[-1]["cpu_s"] - samples[0]["cpu_s"])
            / (samples[-1]["t"] - samples[0]["t"])
            if len(samples) > 1
            else None
        )
        rows.append(
            {
                "from_s": lo,
                "to_s": hi,
                "requests": len(reqs),
                **{o: sum(r[4] == o for r in reqs) for o in OUTCOMES},
                "p50": _pct([r[3] for r in ok], 0.50),
                "p95": _pct([r[3] for r in ok], 0.95),
                "p99": _pct([r[3] for r in ok], 0.99),
                "p99_upstream": _pct([r[3] for r in ok if r[1] in UPSTREAM_KINDS], 0.99),
                "p99_embedded": _pct([r[3] for r in ok if r[1] in EMBEDDED_KINDS], 0.99),
                "rss_median": statistics.median(s["rss_mb"] for s in samples) if samples else None,
                "rss_max": max((s["rss_mb"] for s in samples), default=None),
                "anon_median": _median(samples, "rss_anon_mb"),
                "file_median": _median(samples, "rss_file_mb"),
                "fds_median": statistics.median(s["fds"] for s in samples) if samples else None,
                "fds_max": max((s["fds"] for s in samples), default=None),
                "threads_max": max((s["threads"] for s in samples), default=None),
                "cpu_pct": cpu,
                "load1": statistics.mean(s["load1"] for s in samples) if samples else None,
            }
        )
    return rows


def _flat(rows: list[dict[str, Any]], key: str) -> tuple[bool, str]:
    base = rows[0][key]
    values = [r[key] for r in rows if r[key] is not None]
    if not base or not values:
        return False, "no samples"
    worst = max(values, key=lambda v: abs(v / base - 1))
    dev = worst / base - 1
    return abs(dev) <= FLAT, f"{base:.1f} → {rows[-1][key]:.1f}, largest deviation {dev:+.1%}"


def slope_per_minute(samples: list[dict[str, float]], key: str) -> float | None:
    """Least-squares trend of `key` per minute (a leak shows as a steady positive slope)."""
    if len(samples) < 3:
        return None
    ts, vs = [s["t"] / 60 for s in samples], [float(s[key]) for s in samples]
    mt, mv = statistics.mean(ts), statistics.mean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den if den else None


def summarize(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = bucket_rows(results, args)
    warm = min(len(rows) - 1, round(args.warmup_minutes * 60 / args.bucket_seconds))
    judged = rows[warm:]
    totals = {o: sum(r[o] for r in rows) for o in OUTCOMES}
    first, last = judged[0]["p99"], judged[-1]["p99"]
    p99_ok = first is not None and last is not None and last <= first * (1 + P99_SLACK)
    p99_text = (
        f"{first * 1000:.0f} ms → {last * 1000:.0f} ms ({last / first - 1:+.0%})"
        if first and last
        else "no completed requests"
    )
    checks = [
        (
            "RSS flat within ±5 % after the warm-up (per-minute medians)",
            *_flat(judged, "rss_median"),
        ),
        (
            "open files flat within ±5 % after the warm-up (per-minute medians)",
            *_flat(judged, "fds_median"),
        ),
        ("p99 of the last minute ≤ 120 % of the first judged minute's", p99_ok, p99_text),
        ("no unexpected response", totals["unexpected"] == 0, f"{totals['unexpected']}"),
        (
            "`tokendock ledger verify` clean after the server stopped",
            results["ledger_verify_exit"] == 0,
            " · ".join(results["ledger_verify"]),
        ),
        (
            "every kind of traffic happened (200, 402, 429, client disconnects)",
            all(totals[o] > 0 for o in OUTCOMES if o != "unexpected"),
            ", ".join(f"{o} {totals[o]}" for o in OUTCOMES),
        ),
    ]
    unexpected = [r for r in results["requests"] if r[4] == "unexpected"]
    details: dict[str, int] = {}
    for r in unexpected:
        key = f"{r[1]} → {r[2]}: {r[5][:120]}"
        details[key] = details.get(key, 0) + 1
    # --smoke judges no target: only requests that went wrong and the ledger count
    judged_checks = checks[3:] if args.smoke else checks
    after = [x for x in results["samples"] if x["t"] >= judged[0]["from_s"]]
    return {
        "rows": rows,
        "warmup_rows": warm,
        "trend": {
            k: slope_per_minute(after, k)
            for k in ("rss_mb", "rss_anon_mb", "rss_file_mb", "fds", "threads")
        },
        "totals": totals,
        "checks": [{"target": t, "pass": ok, "value": v} for t, ok, v in checks],
        "unexpected": details,
        "ok": all(ok for _, ok, _ in judged_checks),
    }


def _label(row: dict[str, Any], args: argparse.Namespace) -> str:
    if args.bucket_seconds == 60:
        return f"{row['from_s'] / 60 + 1:.0f}"
    return f"{row['from_s']:.0f}–{row['to_s']:.0f} s"


def table(summary: dict[str, Any], args: argparse.Namespace) -> str:
    unit = "minute" if args.bucket_seconds == 60 else "window"
    lines = [
        f"| {unit} | requests | ok / 402 / 429 / hung up / unexpected | latency p50 / p95 / p99 "
        "(ms) | p99 upstream / embedded (ms) | RSS MB median (max) | RSS anon / file MB | "
        "open files median (max) | threads | server CPU | load avg |",
        "|---|---:|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for i, r in enumerate(summary["rows"]):
        warm = " (warm-up)" if i < summary["warmup_rows"] else ""
        rss = "–" if r["rss_median"] is None else f"{r['rss_median']:.1f} ({r['rss_max']:.1f})"
        parts = (
            "–"
            if r["anon_median"] is None or r["file_median"] is None
            else f"{r['anon_median']:.1f} / {r['file_median']:.1f}"
        )
        fds = "–" if r["fds_median"] is None else f"{r['fds_median']:.0f} ({r['fds_max']:.0f})"
        cpu = "–" if r["cpu_pct"] is None else f"{r['cpu_pct']:.0f} %"
        load = "–" if r["load1"] is None else f"{r['load1']:.2f}"
        lines.append(
            f"| {_label(r, args)}{warm} | {r['requests']:,} | "
            + " / ".join(f"{r[o]:,}" for o in OUTCOMES)
            + f" | {_ms(r['p50'])} / {_ms(r['p95'])} / {_ms(r['p99'])} | "
            f"{_ms(r['p99_upstream'])} / {_ms(r['p99_embedded'])} | {rss} | {parts} | {fds} | "
            f"{r['threads_max'] or '–'} | {cpu} | {load} |"
        )
    return "\n".join(lines)


def render(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    m = results["meta"]
    idle = results["idle_after"]
    word = {True: "PASS", False: "FAIL"}
    out = [
        f"**Run:** {m['date']} · `nproc` = {m['nproc']}, {m['cpu']} · Linux {m['kernel']} · "
        f"Python {m['python']} · TokenDock at `{m['commit']}` · load average before "
        f"{m['loadavg_before']} (the machine is shared: other work ran during the soak).",
        "",
        f"**Command:** `{m['command']}` ({args.minutes:g} minutes, the first "
        f"{args.warmup_minutes:g} not judged; {args.upstream_workers} upstream and "
        f"{args.embedded_workers} embedded workers; RSS and open files sampled every "
        f"{args.sample_seconds:g} s).",
        "",
        table(summary, args),
        "",
        f"After the traffic (idle, {idle['t']:.0f} s): RSS {idle['rss_mb']:.1f} MB, "
        f"{idle['fds']} open files, {idle['threads']} threads. Usage records by status: "
        f"{results['usage_records']}. Server log: {results['log_problems']}.",
        "",
        "Trend after the warm-up (least squares over every sample): "
        + ", ".join(
            f"{name} {'–' if v is None else f'{v:+.2f}'}{unit} per minute"
            for name, v, unit in (
                ("RSS", summary["trend"]["rss_mb"], " MB"),
                ("anonymous", summary["trend"]["rss_anon_mb"], " MB"),
                ("file-backed", summary["trend"]["rss_file_mb"], " MB"),
                ("open files", summary["trend"]["fds"], ""),
                ("threads", summary["trend"]["threads"], ""),
            )
        )
        + ".",
        "",
        "#### Verdict" + (" (smoke run: targets not judged)" if args.smoke else ""),
        "",
    ]
    for c in summary["checks"]:
        out.append(f"- {c['target']}: **{word[c['pass']]}** ({c['value']})")
    for detail, count in summary["unexpected"].items():
        out.append(f"  - unexpected ×{count}: `{detail}`")
    verdict = "PASS" if summary["ok"] else "FAIL"
    out += ["", f"**Overall: {verdict}**"]
    return "\n".join(out)


def update_doc(path: Path, text: str) -> None:
    """Replace the results block of the "Soak" section (created when missing)."""
    write_section(path, "soak", text, intro="## Soak\n\n### Latest run")
