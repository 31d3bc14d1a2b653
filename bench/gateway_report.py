"""Reporting for bench/gateway.py: targets, Markdown tables, the plot, docs/benchmarks.md, and
py-spy's collapsed stacks boiled down to the top functions."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import write_section

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
    return out


# -- Markdown -------------------------------------------------------------------------------


def _targets(results: dict[str, Any]) -> list[str]:
    seen = [p["target"] for p in results["points"]]
    return [t for t in ("direct", "tokendock", "litellm") if t in seen]


def summary_table(results: dict[str, Any]) -> str:
    targets = _targets(results)
    rows: list[list[str]] = []

    def lat(scenario: str) -> None:
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
        delay = results["meta"]["slow_ms"] if scenario == "slow" else 0
        rows.append([f"latency p50 / p99 at c=1, {delay:g} ms mock (ms; added)", *cells])

    def rps(scenario: str, c: int) -> None:
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
        delay = results["meta"]["slow_ms"] if scenario == "slow" else 0
        rows.append([f"requests/s at c={c}, {delay:g} ms mock", *cells])

    lat("fast")
    lat("slow")
    for scenario in ("fast", "slow"):
        for c in (16, 64):
            rps(scenario, c)
    for scenario, c in (("fast", 64), ("slow", 16)):
        cells = []
        for t in targets:
            p = point(results, t, scenario, c)
            cells.append(
                f"{p['cpu_ms_per_request']:.2f}" if p and "cpu_ms_per_request" in p else "–"
            )
        delay = results["meta"]["slow_ms"] if scenario == "slow" else 0
        rows.append([f"gateway CPU-ms per request (c={c}, {delay:g} ms mock)", *cells])
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
    rows.append(["streaming TTFT p50 / p99 at c=1, 0 ms mock (ms; added)", *cells])
    cells = []
    for t in targets:
        levels = results["streams"].get(t, [])
        tried = [lv["streams"] for lv in levels]
        cells.append(
            f"{stall_free(levels):,} (tried {', '.join(map(str, tried))})" if levels else "–"
        )
    rows.append(["concurrent streams served stall-free", *cells])
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
    rows.append(["peak RSS per process, MB: VmHWM / largest VmRSS sampled", *cells])
    idle = results.get("idle_cpu_pct", {})
    rows.append(
        [
            "CPU when idle (background work, % of one core)",
            *(f"{idle[t]:.1f} %" if t in idle else "–" for t in targets),
        ]
    )
    cells = []
    for t in targets:
        errs = sum(p["errors"] for p in results["points"] if p["target"] == t)
        failed = sum(lv["failed"] for lv in results["streams"].get(t, []))
        cells.append(f"{errs} / {failed}")
    rows.append(["wrk errors (non-2xx, socket) / failed streams", *cells])
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


# -- log scan, py-spy -----------------------------------------------------------------------


def log_problems(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    bad = [ln for ln in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", ln)]
    if not bad:
        return f"log: no ERROR/Traceback lines ({len(lines)} lines)"
    # the exception lines that end tracebacks: "SomeError: message"
    kinds = Counter(
        ln.split(":", 1)[0].strip()
        for ln in lines
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Disconnect|Timeout)\b", ln)
    )
    shown = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common(5))
    return (
        f"log: {len(bad)} ERROR/Traceback lines (exceptions: {shown or 'none named'}); "
        f"first: `{bad[0][:160]}`"
    )


def _frame(raw: str) -> tuple[str, str]:
    """('function (short/file.py)', 'package') from a py-spy frame 'fn (path:line)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", raw)
    fn, path = (m.group(1), m.group(2)) if m else (raw, "")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    parts = path.split("/")
    if parts[0] == "tokendock" and len(parts) > 2:
        package = "tokendock." + parts[1]
    elif parts[0] == "stdlib" and len(parts) > 1:
        package = "stdlib:" + parts[1].removesuffix(".py")
    else:
        package = parts[0].removesuffix(".py")
    return f"{fn} ({path})", package


def collapsed_summary(path: Path, top: int = 20) -> dict[str, Any]:
    """From py-spy's raw output (recorded with --threads): the share of each thread, self time
    by package and function (all threads, and the event loop's thread alone), and the
    inclusive time of TokenDock's own functions."""
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    main_fn: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = main_total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0, "error": f"no py-spy output at {path}"}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = "?"
        if parts[0].startswith("thread ("):
            thread = re.sub(r"\d+", "N", parts[0].split(": ", 1)[-1])
        frames = [f for f in parts if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        total += n
        fn, pkg = _frame(frames[-1])
        self_fn[fn] += n
        self_pkg[pkg] += n
        root = _frame(frames[min(1, len(frames) - 1)])[0].split(" (")[0]
        threads[f"{thread} [{root}]" if thread != "MainThread" else thread] += n
        if thread == "MainThread":
            main_total += n
            main_fn[fn] += n
        seen = set()
        for f in frames:
            name, fpkg = _frame(f)
            if fpkg.startswith("tokendock") and name not in seen:
                seen.add(name)
                incl[name] += n

    def share(c: Counter[str], k: int, of: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / of) for name, n in c.most_common(k)] if of else []

    return {
        "samples": total,
        "threads": share(threads, 8, total),
        "self_packages": share(self_pkg, 15, total),
        "self_functions": share(self_fn, top, total),
        "main_thread_self": share(main_fn, top, main_total),
        "tokendock_inclusive": share(incl, top, total),
    }


def profile_text(p: dict[str, Any]) -> str:
    if not p.get("samples"):
        return f"py-spy: no samples ({p.get('error', '')})"
    out = [
        f"load: {p.get('load', '')}",
        f"{p['samples']} samples (200 Hz, every non-idle thread; C code shows as its caller,"
        " so uvloop's own work appears as Runner.run)",
        "",
        "samples by thread:",
    ]
    out += [f"  {v:5.1f} %  {k}" for k, v in p.get("threads", [])]
    out += ["", "self time by package:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["self_packages"]]
    out += ["", "self time by function:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["self_functions"]]
    out += ["", "the event loop's thread alone, self time by function:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p.get("main_thread_self", [])]
    out += ["", "inclusive time, TokenDock's functions:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["tokendock_inclusive"]]
    return "\n".join(out)


# -- plot -----------------------------------------------------------------------------------


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("installing matplotlib into the bench's Python (pip install matplotlib) …")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"],
            check=False,
            timeout=600,
        )
        try:
            import matplotlib
        except ImportError:
            return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results: dict[str, Any], png: Path) -> bool:
    plt = _matplotlib()
    if plt is None:
        print("matplotlib unavailable: no plot")
        return False
    targets = _targets(results)
    colors = {"direct": "#888888", "tokendock": "#1f77b4", "litellm": "#d62728"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    slow = results["meta"]["slow_ms"]

    ax = axes[0][0]
    cases = [("fast", 16), ("fast", 64), ("slow", 16), ("slow", 64)]
    width = 0.8 / max(1, len(targets))
    for i, t in enumerate(targets):
        vals = [(point(results, t, s, c) or {"rps": 0})["rps"] for s, c in cases]
        xs = [j + i * width for j in range(len(cases))]
        ax.bar(xs, vals, width, label=NAMES[t], color=colors[t])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"c={c}\n{slow if s == 'slow' else 0:g} ms mock" for s, c in cases])
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.set_title("Throughput (wrk, non-streaming)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    gws = [t for t in targets if t != "direct"]
    labels = ["p50, 0 ms", "p99, 0 ms", f"p50, {slow:g} ms", f"p99, {slow:g} ms", "TTFT p50"]
    width = 0.8 / max(1, len(gws))
    d_ttft = results["ttft"].get("direct", {}).get("ttft_ms", [])
    for i, t in enumerate(gws):
        vals = [added(results, t, s, k) or 0 for s in ("fast", "slow") for k in ("p50", "p99")]
        tt = results["ttft"].get(t, {}).get("ttft_ms", [])
        vals.append((pct(tt, 50) or 0) - (pct(d_ttft, 50) or 0) if tt else 0)
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [max(v, 0.001) for v in vals], width, label=NAMES[t], color=colors[t])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, max(v, 0.001), f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(0.5, color="#1f77b4", ls=":", lw=1)
    ax.axhline(2.0, color="#1f77b4", ls="--", lw=1)
    ax.set_xticks([j + width * (len(gws) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms added vs direct, c=1 (log)")
    ax.set_title("Added latency (targets: p50 ≤ 0.5 ms, p99 ≤ 2 ms)")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    pts = [(s, c) for s in ("fast", "slow") for c in (1, 16, 64)]
    for i, t in enumerate(gws):
        vals = [(point(results, t, s, c) or {}).get("cpu_ms_per_request", 0) for s, c in pts]
        xs = [j + i * width for j in range(len(pts))]
        ax.bar(xs, vals, width, label=NAMES[t], color=colors[t])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.5, color="#1f77b4", ls="--", lw=1)
    ax.set_xticks([j + width * (len(gws) - 1) / 2 for j in range(len(pts))])
    ax.set_xticklabels([f"c={c}\n{slow if s == 'slow' else 0:g} ms" for s, c in pts], fontsize=8)
    ax.set_ylabel("gateway CPU-ms per request")
    ax.set_title("CPU cost per request (target ≤ 1.5 ms)")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    for t in targets:
        levels = results["streams"].get(t, [])
        if not levels:
            continue
        xs = [lv["streams"] for lv in levels]
        ys = [lv["max_gap_s"] if lv["max_gap_s"] is not None else 0 for lv in levels]
        ax.plot(xs, ys, marker="o", label=NAMES[t], color=colors[t])
        for lv, y in zip(levels, ys, strict=True):
            bad = lv["failed"] + lv["stalled"]
            if bad:
                ax.annotate(
                    f"{bad:,}/{lv['streams']:,} stalled or failed",
                    (lv["streams"], y),
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
    ax.axhline(1.0, color="black", ls="--", lw=1, label="stall (1 s)")
    ax.set_xlabel("concurrent streams (100 chunks, 50-100 ms apart)")
    ax.set_ylabel("longest gap between reads (s)")
    ax.set_title("Many long-lived streams (target ≥ 1,000 stall-free)")
    ax.legend(fontsize=8)

    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for ax in (axes[0][0], axes[0][1]):
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
    m = results["meta"]
    fig.suptitle(
        f"Gateway benchmark · {m['date']} · nproc {m['nproc']} · {m['cpu']} · "
        f"LiteLLM {m.get('litellm', '–')}",
        fontsize=10,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True
