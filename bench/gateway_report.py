"""Reporting for bench/gateway.py: the targets judged, the Markdown tables and the section of
docs/benchmarks.md (the plot is bench/gateway_plot.py, the py-spy summary bench/pyspy.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.gateway_media import section as transcription_section
from bench.gateway_media import verdicts as transcription_verdicts
from bench.harness import write_section
from bench.pyspy import profile_text

SECTION = "## Gateway (bench/gateway.py)"
NAMES = {"direct": "direct (mock)", "tokendock": "TokenDock", "litellm": "LiteLLM"}


def fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def fmt_s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def point(results: dict[str, Any], target: str, scenario: str, c: int) -> dict[str, Any] | None:
    points: list[dict[str, Any]] = results["points"]
    for p in points:
        if (p["target"], p["scenario"], p["concurrency"]) == (target, scenario, c):
            return p
    return None


def point_line(r: dict[str, Any]) -> str:
    cpu = f", {r['cpu_ms_per_request']:.2f} CPU-ms/req" if "cpu_ms_per_request" in r else ""
    return (
        f"{r['target']:9s} mock {r['delay_ms']:>2.0f} ms c={r['concurrency']:<3d} "
        f"{r['rps']:>9,.0f} req/s  p50 {r['p50'] / 1000:7.2f} ms  p99 {r['p99'] / 1000:7.2f} ms"
        f"{cpu}  errors {r['errors']}  upstream {r['upstream_requests']}/{r['requests']}"
        f" (≤{r['upstream_peak_inflight']} in flight)"
        f"  (mock CPU {r['mock_cpu_pct']:.0f} %, wrk {r['wrk_cpu_pct']:.0f} %,"
        f" machine {r['machine_busy_pct']:.0f} %)"
    )


def ttft_line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:9s} TTFT p50 {fmt_ms(pct(r['ttft_ms'], 50))}, p99 {fmt_ms(pct(r['ttft_ms'], 99))}"
        f" ({len(r['ttft_ms'])} ok, {len(r['failures'])} failed, usage chunk in "
        f"{r['usage_chunks']}) {r['note']}"
        + (f" first failure: {r['failures'][0]}" if r["failures"] else "")
    )


def stall_free(levels: list[dict[str, Any]]) -> int:
    """The largest level served stall-free, every smaller level stall-free too."""
    best = 0
    for lv in levels:
        if not lv["stall_free"]:
            break
        best = lv["streams"]
    return best


def peak_rss(results: dict[str, Any], target: str) -> float | None:
    procs = results.get("memory", {}).get(target)
    return max(p["peak_rss_mb"] for p in procs) if procs else None


def added(results: dict[str, Any], target: str, scenario: str, key: str) -> float | None:
    g, d = point(results, target, scenario, 1), point(results, "direct", scenario, 1)
    return (g[key] - d[key]) / 1000 if g and d else None


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    def v(target: str, value: float | None, ok: bool | None, unit: str = "") -> dict[str, Any]:
        shown = "not measured" if value is None else f"{value:,.2f}{unit}"
        return {"target": target, "value": shown, "pass": None if value is None else ok}

    out = []
    for key, limit in (("p50", 0.5), ("p99", 2.0)):
        a = added(results, "tokendock", "fast", key)
        out.append(
            v(
                f"TokenDock added {key} ≤ {limit} ms at c=1 (0 ms mock)",
                a,
                a is not None and a <= limit,
                " ms",
            )
        )
    td, ll = point(results, "tokendock", "fast", 64), point(results, "litellm", "fast", 64)
    ratio = td["rps"] / ll["rps"] if td and ll and ll["rps"] > 0 else None
    out.append(
        v(
            "TokenDock ≥ 10× LiteLLM's requests/s at c=64 (0 ms mock)",
            ratio,
            ratio is not None and ratio >= 10,
            "×",
        )
    )
    cpu = td.get("cpu_ms_per_request") if td else None
    out.append(
        v(
            "TokenDock CPU ≤ 1.5 ms per request (c=64, 0 ms mock)",
            cpu,
            cpu is not None and cpu <= 1.5,
            " ms",
        )
    )
    g, d = point(results, "tokendock", "slow", 16), point(results, "direct", "slow", 16)
    kept = 100 * g["rps"] / d["rps"] if g and d and d["rps"] > 0 else None
    out.append(
        v(
            "TokenDock keeps ≥ 90 % of direct throughput at c=16 (20 ms mock)",
            kept,
            kept is not None and kept >= 90,
            " %",
        )
    )
    levels = results.get("streams", {}).get("tokendock")
    n = float(stall_free(levels)) if levels else None
    out.append(
        v(
            "TokenDock serves ≥ 1,000 concurrent streams stall-free",
            n,
            n is not None and n >= 1000,
            " streams",
        )
    )
    rss = peak_rss(results, "tokendock")
    out.append(
        v("TokenDock peak RSS ≤ 150 MB per process", rss, rss is not None and rss <= 150, " MB")
    )
    return out + transcription_verdicts(results)


# -- Markdown -------------------------------------------------------------------------------


def targets_in(results: dict[str, Any]) -> list[str]:
    seen = [p["target"] for p in results["points"]]
    return [t for t in ("direct", "tokendock", "litellm") if t in seen]


Row = list[str]


def _mock(results: dict[str, Any], scenario: str) -> float:
    """The mock's delay of a scenario, in ms."""
    return float(results["meta"]["slow_ms"]) if scenario == "slow" else 0.0


def _latency_row(results: dict[str, Any], targets: list[str], scenario: str) -> Row:
    cells = []
    for t in targets:
        p = point(results, t, scenario, 1)
        if p is None:
            cells.append("–")
            continue
        cell = f"{p['p50'] / 1000:.2f} / {p['p99'] / 1000:.2f}"
        if t != "direct":
            cell += (
                f" (+{added(results, t, scenario, 'p50'):.2f} / "
                f"+{added(results, t, scenario, 'p99'):.2f})"
            )
        cells.append(cell)
    delay = _mock(results, scenario)
    return [f"latency p50 / p99 at c=1, {delay:g} ms mock (ms; added)", *cells]


def _rps_row(results: dict[str, Any], targets: list[str], scenario: str, c: int) -> Row:
    d = point(results, "direct", scenario, c)
    cells = []
    for t in targets:
        p = point(results, t, scenario, c)
        if p is None:
            cells.append("–")
            continue
        cell = f"{p['rps']:,.0f}"
        if t != "direct" and d and d["rps"] > 0:
            cell += f" ({100 * p['rps'] / d['rps']:.1f} % of direct)"
        cells.append(cell)
    return [f"requests/s at c={c}, {_mock(results, scenario):g} ms mock", *cells]


def _cpu_row(results: dict[str, Any], targets: list[str], scenario: str, c: int) -> Row:
    cells = []
    for t in targets:
        p = point(results, t, scenario, c)
        cells.append(f"{p['cpu_ms_per_request']:.2f}" if p and "cpu_ms_per_request" in p else "–")
    return [f"gateway CPU-ms per request (c={c}, {_mock(results, scenario):g} ms mock)", *cells]


def _ttft_row(results: dict[str, Any], targets: list[str]) -> Row:
    cells = []
    d_ttft = results["ttft"].get("direct", {}).get("ttft_ms", [])
    for t in targets:
        r = results["ttft"].get(t)
        if not r or not r["ttft_ms"]:
            cells.append("–")
            continue
        p50, p99 = pct(r["ttft_ms"], 50) or 0, pct(r["ttft_ms"], 99) or 0
        cell = f"{p50:.2f} / {p99:.2f}"
        if t != "direct" and d_ttft:
            cell += f" (+{p50 - (pct(d_ttft, 50) or 0):.2f} / +{p99 - (pct(d_ttft, 99) or 0):.2f})"
        cells.append(cell)
    return ["streaming TTFT p50 / p99 at c=1, 0 ms mock (ms; added)", *cells]


def _streams_row(results: dict[str, Any], targets: list[str]) -> Row:
    cells = []
    for t in targets:
        levels = results["streams"].get(t, [])
        tried = [lv["streams"] for lv in levels]
        cells.append(
            f"{stall_free(levels):,} (tried {', '.join(map(str, tried))})" if levels else "–"
        )
    return ["concurrent streams served stall-free", *cells]


def _memory_row(results: dict[str, Any], targets: list[str]) -> Row:
    cells = []
    for t in targets:
        procs = results.get("memory", {}).get(t)
        if not procs:
            cells.append("–")
            continue
        cells.append(
            f"{max(p['peak_rss_mb'] for p in procs):.0f} / "
            f"{max(p.get('max_sampled_rss_mb', 0) for p in procs):.0f}"
            + (f" ({len(procs)} processes)" if len(procs) > 1 else "")
        )
    return ["peak RSS per process, MB: VmHWM / largest VmRSS sampled", *cells]


def _errors_row(results: dict[str, Any], targets: list[str]) -> Row:
    cells = []
    for t in targets:
        errs = sum(p["errors"] for p in results["points"] if p["target"] == t)
        failed = sum(lv["failed"] for lv in results["streams"].get(t, []))
        cells.append(f"{errs} / {failed}")
    return ["wrk errors (non-2xx, socket) / failed streams", *cells]


def summary_table(results: dict[str, Any]) -> str:
    """One row per headline figure, one column per target."""
    targets = targets_in(results)
    idle = results.get("idle_cpu_pct", {})
    rows = [
        _latency_row(results, targets, "fast"),
        _latency_row(results, targets, "slow"),
        *(_rps_row(results, targets, s, c) for s in ("fast", "slow") for c in (16, 64)),
        *(_cpu_row(results, targets, s, c) for s, c in (("fast", 64), ("slow", 16))),
        _ttft_row(results, targets),
        _streams_row(results, targets),
        _memory_row(results, targets),
        [
            "CPU when idle (background work, % of one core)",
            *(f"{idle[t]:.1f} %" if t in idle else "–" for t in targets),
        ],
        _errors_row(results, targets),
    ]
    head = "| metric | " + " | ".join(NAMES[t] for t in targets) + " |"
    sep = "|---|" + "---:|" * len(targets)
    return "\n".join([head, sep, *("| " + " | ".join(r) + " |" for r in rows)])


def points_table(results: dict[str, Any]) -> str:
    lines = [
        "| mock | c | target | requests/s | % of direct | p50 (ms) | p99 (ms) | CPU-ms/req | "
        "gateway CPU | mock CPU | wrk CPU | machine busy | errors | upstream / completed | "
        "upstream peak in flight |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in results["points"]:
        d = point(results, "direct", p["scenario"], p["concurrency"])
        share = (
            f"{100 * p['rps'] / d['rps']:.1f} %"
            if d and d["rps"] and p["target"] != "direct"
            else ""
        )
        cpu = f"{p['cpu_ms_per_request']:.2f}" if "cpu_ms_per_request" in p else ""
        gcpu = f"{p['gateway_cpu_pct']:.0f} %" if "gateway_cpu_pct" in p else ""
        lines.append(
            f"| {p['delay_ms']:g} ms | {p['concurrency']} | {NAMES[p['target']]} | "
            f"{p['rps']:,.0f} | {share} | {p['p50'] / 1000:.2f} | {p['p99'] / 1000:.2f} | {cpu} | "
            f"{gcpu} | {p['mock_cpu_pct']:.0f} % | {p['wrk_cpu_pct']:.0f} % | "
            f"{p['machine_busy_pct']:.0f} % | {p['errors']} | "
            f"{p['upstream_requests']:,} / {p['requests']:,} | {p['upstream_peak_inflight']} |"
        )
    return "\n".join(lines)


def streams_table(results: dict[str, Any]) -> str:
    lines = [
        "| target | streams | ok | stalled | failed | peak open | max gap | p99 of max gaps | "
        "first byte p50 / max | gateway CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, levels in results["streams"].items():
        for lv in levels:
            cpu = f"{lv['gateway_cpu_s']:.1f} s" if "gateway_cpu_s" in lv else ""
            lines.append(
                f"| {NAMES[t]} | {lv['streams']:,} | {lv['ok']:,} | {lv['stalled']:,} | "
                f"{lv['failed']:,} | {lv['peak_open']:,} | {fmt_s(lv['max_gap_s'])} | "
                f"{fmt_s(lv['p99_max_gap_s'])} | {fmt_ms(lv['ttfb_p50_ms'])} / "
                f"{fmt_ms(lv['ttfb_max_ms'])} | {cpu} |"
            )
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    m = results["meta"]
    out = [
        f"**Run:** {m['date']} · `nproc` = {m['nproc']}, {m['cpu']} · Linux {m['kernel']} · "
        f"Python {m['python']} · LiteLLM {m.get('litellm', 'not run')} · TokenDock at "
        f"`{m['commit']}` · {m['wrk']} · load average {m['loadavg_before']} before, "
        f"{m.get('loadavg_after', '?')} after.",
        "",
        f"**Command:** `make bench-gateway` (= `.venv/bin/{m['command']}`); {m['seconds']:g} s "
        "per wrk point after a 1 s warm-up.",
        "",
    ]
    for name, why in results["failures"].items():
        out += [f"**{NAMES.get(name, name)}: {why}**", ""]
    out += ["#### Summary", "", summary_table(results), "", "#### Targets", ""]
    for v in results["verdicts"]:
        word = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[v["pass"]]
        out.append(f"- {v['target']}: **{word}** ({v['value']})")
    out += transcription_section(results)
    out += [
        "",
        "#### Every wrk point",
        "",
        points_table(results),
        "",
        "#### Concurrent streams (100 chunks 50-100 ms apart each)",
        "",
        streams_table(results),
        "",
        "#### Memory (VmHWM of every process)",
        "",
    ]
    for t, procs in results.get("memory", {}).items():
        for p in procs:
            out.append(
                f"- {NAMES[t]}: pid {p['pid']} VmHWM {p['peak_rss_mb']:.0f} MB, largest VmRSS "
                f"sampled {p.get('max_sampled_rss_mb', 0):.0f} MB — `{p['cmd']}`"
            )
        phases = results.get("rss_phases", {}).get(t)
        if phases:
            shown = ", ".join(f"{k} {v:.0f} MB" for k, v in phases.items())
            out.append(f"- {NAMES[t]}: VmHWM so far, by phase: {shown}")
        series = results.get("rss_series", {}).get(t)
        if series:
            rss = [v for _, v in series]
            out.append(
                f"- {NAMES[t]}: VmRSS (all its processes) sampled every second: first "
                f"{rss[0]:.0f} MB, min {min(rss):.0f}, max {max(rss):.0f}, last {rss[-1]:.0f} MB"
            )
    integ = results.get("tokendock_integrity")
    if integ:
        out += [
            "",
            "#### TokenDock after the run",
            "",
            f"- usage records by status/finish_reason: {integ.get('usage_records')} "
            f"(total {integ.get('usage_total')})",
            f"- `tokendock ledger verify`: exit {integ.get('ledger_verify_exit')}: "
            f"{' · '.join(integ.get('ledger_verify', []))}",
        ]
    out += ["", "#### Notes", "", f"- logs of every process: `{results.get('logs', '?')}`"]
    for t, notes in results.get("notes", {}).items():
        for n in notes:
            if n:
                out.append(f"- {NAMES[t]}: {n}")
    prof = results.get("profile")
    if prof:
        out += ["", "#### Where TokenDock spends its CPU (py-spy)", ""]
        for p in prof.values():
            if isinstance(p, dict) and "samples" in p:
                out += ["```", profile_text(p), "```"]
            elif isinstance(p, str):
                out.append(p)
    return "\n".join(out)


def update_docs(md: Path, text: str, png_name: str) -> None:
    """The results and the plot into the "gateway" section of `md` (made when missing)."""
    block = f"{text}\n\n![Gateway benchmark]({png_name})"
    write_section(md, "gateway", block, intro=f"{SECTION}\n\n### Results")
