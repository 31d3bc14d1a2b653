"""The plot of bench/gateway.py's results (docs/gateway-bench.png): throughput, added latency,
CPU per request and long-lived streams, one panel each, TokenDock beside LiteLLM and the mock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.gateway_report import NAMES, added, pct, point, targets_in


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


COLORS = {"direct": "#888888", "tokendock": "#1f77b4", "litellm": "#d62728"}


def _throughput(ax: Any, results: dict[str, Any], targets: list[str]) -> None:
    slow = results["meta"]["slow_ms"]
    cases = [("fast", 16), ("fast", 64), ("slow", 16), ("slow", 64)]
    width = 0.8 / max(1, len(targets))
    for i, t in enumerate(targets):
        vals = [(point(results, t, s, c) or {"rps": 0})["rps"] for s, c in cases]
        xs = [j + i * width for j in range(len(cases))]
        ax.bar(xs, vals, width, label=NAMES[t], color=COLORS[t])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"c={c}\n{slow if s == 'slow' else 0:g} ms mock" for s, c in cases])
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.set_title("Throughput (wrk, non-streaming)")
    ax.legend(fontsize=8)


def _added_latency(ax: Any, results: dict[str, Any], gws: list[str]) -> None:
    slow = results["meta"]["slow_ms"]
    labels = ["p50, 0 ms", "p99, 0 ms", f"p50, {slow:g} ms", f"p99, {slow:g} ms", "TTFT p50"]
    width = 0.8 / max(1, len(gws))
    d_ttft = results["ttft"].get("direct", {}).get("ttft_ms", [])
    for i, t in enumerate(gws):
        vals = [added(results, t, s, k) or 0 for s in ("fast", "slow") for k in ("p50", "p99")]
        tt = results["ttft"].get(t, {}).get("ttft_ms", [])
        vals.append((pct(tt, 50) or 0) - (pct(d_ttft, 50) or 0) if tt else 0)
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [max(v, 0.001) for v in vals], width, label=NAMES[t], color=COLORS[t])
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


def _cpu_per_request(ax: Any, results: dict[str, Any], gws: list[str]) -> None:
    slow = results["meta"]["slow_ms"]
    pts = [(s, c) for s in ("fast", "slow") for c in (1, 16, 64)]
    width = 0.8 / max(1, len(gws))
    for i, t in enumerate(gws):
        vals = [(point(results, t, s, c) or {}).get("cpu_ms_per_request", 0) for s, c in pts]
        xs = [j + i * width for j in range(len(pts))]
        ax.bar(xs, vals, width, label=NAMES[t], color=COLORS[t])
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.5, color="#1f77b4", ls="--", lw=1)
    ax.set_xticks([j + width * (len(gws) - 1) / 2 for j in range(len(pts))])
    ax.set_xticklabels([f"c={c}\n{slow if s == 'slow' else 0:g} ms" for s, c in pts], fontsize=8)
    ax.set_ylabel("gateway CPU-ms per request")
    ax.set_title("CPU cost per request (target ≤ 1.5 ms)")
    ax.legend(fontsize=8)


def _streams(ax: Any, results: dict[str, Any], targets: list[str]) -> None:
    for t in targets:
        levels = results["streams"].get(t, [])
        if not levels:
            continue
        xs = [lv["streams"] for lv in levels]
        ys = [lv["max_gap_s"] if lv["max_gap_s"] is not None else 0 for lv in levels]
        ax.plot(xs, ys, marker="o", label=NAMES[t], color=COLORS[t])
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


def plot(results: dict[str, Any], png: Path) -> bool:
    """The four panels into `png`; False when matplotlib cannot be had."""
    plt = _matplotlib()
    if plt is None:
        print("matplotlib unavailable: no plot")
        return False
    from matplotlib.ticker import FuncFormatter, NullFormatter

    targets = targets_in(results)
    gws = [t for t in targets if t != "direct"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    _throughput(axes[0][0], results, targets)
    _added_latency(axes[0][1], results, gws)
    _cpu_per_request(axes[1][0], results, gws)
    _streams(axes[1][1], results, targets)
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
