"""bench/engine.py's report: the targets, the markdown it prints and writes into
docs/benchmarks.md (between two markers in the "Engine" section), and the SVG plot of aggregate
tokens/s against concurrency of every side (hand-written SVG, no plotting library). The
side-by-side tables and targets against llama-server are in bench/engine_tables.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from bench.engine_load import Level, PrefixPair, median_ms
from bench.engine_profile import EngineProfile, profile_markdown
from bench.engine_single import markdown_table
from bench.engine_tables import (
    Check,
    burst_table,
    comparison_table,
    level_rows,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SVG = ROOT / "docs" / "bench-engine-concurrency.svg"
COLORS = {
    "TokenDock": "#1f6feb",
    "llama-server": "#1a7f37",
    "llama_cpp.server": "#d1242f",
    "TokenDock (deterministic)": "#8250df",
}


@dataclass
class ServerRun:
    name: str  # a key of COLORS
    levels: list[Level] = field(default_factory=list)
    chat: list[Level] = field(default_factory=list)  # streamed chat completions
    bursts: list[Level] = field(default_factory=list)  # burst stability, in order
    prefix: list[PrefixPair] = field(default_factory=list)
    prefix_tokens: int = 0  # max_tokens of the prefix requests
    peak_rss_mb: float = math.nan
    max_sampled_rss_mb: float = math.nan
    others_cpu_pct: float = math.nan  # CPU the rest of the machine used meanwhile, % of all

    def level(self, c: int) -> Level | None:
        return next((lv for lv in self.levels if lv.concurrency == c), None)

    def scale(self, c: int) -> float:
        one, other = self.level(1), self.level(c)
        if one is None or other is None or not one.aggregate_tps:
            return math.nan
        return other.aggregate_tps / one.aggregate_tps

    def cold_ms(self) -> float:
        return median_ms([p.cold.ttft_ms for p in self.prefix])

    def repeat_ms(self) -> float:
        return median_ms([p.repeat.ttft_ms for p in self.prefix])

    def prefix_complete(self) -> bool:
        return all(
            o.error is None and o.first is not None for p in self.prefix for o in (p.cold, p.repeat)
        )


def targets(single: dict[str, Any], dock: ServerRun) -> list[Check]:
    gen = single["metrics"]["gen_tps"]["rate"]
    ttft = single["metrics"]["ttft_ms"]["ms"]
    c4, c16 = dock.scale(4), dock.scale(16)
    requests = sum(len(lv.outcomes) for lv in dock.levels)
    cut = sum(lv.cut_short for lv in dock.levels)
    cold, repeat = dock.cold_ms(), dock.repeat_ms()
    speedup = cold / repeat if repeat else math.nan
    return [
        (f"TokenDock concurrency 4 ≥ 1.6× its concurrency 1: {c4:.2f}×", c4 >= 1.6),
        (f"TokenDock concurrency 16 ≥ 3× its concurrency 1: {c16:.2f}×", c16 >= 3.0),
        (
            f"every TokenDock request complete: {requests - cut} of {requests}",
            cut == 0 and requests > 0 and dock.prefix_complete(),
        ),
        (f"single-stream generation ≥ 95 % of bare llama-cpp-python: {gen:.1%}", gen >= 0.95),
        (f"TTFT added < 5 ms: {ttft:+.1f} ms", ttft < 5.0),
        (
            f"repeat with the shared ~400-token system prompt ≥ 3× faster to first token than "
            f"cold: {cold:.0f} → {repeat:.0f} ms, {speedup:.1f}×",
            speedup >= 3.0,
        ),
    ]


def _f(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:,.{digits}f}"


def prefix_table(runs: list[ServerRun]) -> str:
    rows = [
        "| server | pairs | prompt tokens (cold / repeat) | cold TTFT (ms) | repeat TTFT (ms) "
        "| speed-up | cached tokens reported (repeat) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for run in runs:
        if not run.prefix:
            continue
        first = run.prefix[0]
        tokens = f"{first.cold.prompt_tokens or '–'} / {first.repeat.prompt_tokens or '–'}"
        cached = sorted({str(p.repeat.cached_tokens) for p in run.prefix})
        speed = run.cold_ms() / run.repeat_ms() if run.repeat_ms() else math.nan
        each = ", ".join(_f(p.speedup, 1) for p in run.prefix)
        rows.append(
            f"| {run.name} | {len(run.prefix)} | {tokens} | {_f(run.cold_ms(), 0)} "
            f"| {_f(run.repeat_ms(), 0)} | {_f(speed, 1)}× ({each}) | {', '.join(cached)} |"
        )
    return "\n".join(rows)


def memory_table(runs: list[ServerRun]) -> str:
    rows = [
        "| server | peak RSS, VmHWM (MB) | largest sampled VmRSS (MB) |",
        "|---|---:|---:|",
    ]
    for run in runs:
        rows.append(f"| {run.name} | {_f(run.peak_rss_mb, 0)} | {_f(run.max_sampled_rss_mb, 0)} |")
    return "\n".join(rows)


@dataclass
class Extras:
    """What the markdown says besides the runs: the profile, the burst plan, skipped sides."""

    profile: EngineProfile | None = None
    profiled: str = ""  # the load it was taken under
    burst_big: int = 16
    burst_small: int = 1
    skipped: list[str] = field(default_factory=list)  # "llama-server: why"


def _errors_of(runs: list[ServerRun]) -> list[str]:
    lines = []
    for run in runs:
        levels = run.levels + run.chat + run.bursts
        for err in sorted({e for lv in levels for e in lv.errors()})[:5]:
            lines.append(f"- {run.name} error: `{err[:160]}`")
    return lines


def _header(m: dict[str, Any], runs: list[ServerRun], extras: Extras) -> list[str]:
    skipped = "".join(f" Skipped: {s}." for s in extras.skipped)
    return [
        '<a id="engine-results"></a>',
        f"**`{m['command']}`** — {m['date']}, commit {m['commit']}; {m['nproc']} CPUs "
        f"(`{m['cpu']}`), load average before the run {m['load']}; Python {m['python']}, "
        f"llama-cpp-python {m['llama_cpp']}, {m['model']} ({m['model_file']}); "
        f"{m['threads']} llama.cpp threads on every side; TokenDock catalog `slots = "
        f"{m['slots']}`; llama-server {m['llama_server']}; took {m['took_s']:.0f} s. Other "
        "processes on the machine used "
        + "; ".join(
            f"{_f(r.others_cpu_pct, 0)} % of the CPUs during the {r.name} part" for r in runs
        )
        + "."
        + skipped,
    ]


def results_markdown(
    meta: dict[str, Any],
    single: dict[str, Any],
    runs: list[ServerRun],
    checks: list[Check],
    extras: Extras,
) -> str:
    m = meta
    out = [
        *_header(m, runs, extras),
        "",
        f"#### Single stream (median of {m['reps']} alternating repetitions, {m['tokens']} tokens)",
        "",
        markdown_table(single),
        "",
        f"#### Concurrency ({m['load_tokens']} tokens per request, every request its own "
        "counting prompt, temperature 0, greedy `/v1/completions`; llama-server with "
        "`ignore_eos`; sides alternated per level)",
        "",
        comparison_table(runs),
        "",
        level_rows(runs, "levels"),
        "",
        f"![aggregate generation tokens/s against concurrency]({SVG.name})",
        "",
        f"#### Streamed chat completions ({m['load_tokens']} tokens, a counting user message)",
        "",
        level_rows([r for r in runs if r.chat], "chat"),
        "",
        f"#### Burst stability (one server process after the runs above: {m['bursts']})",
        "",
        burst_table(runs, extras.burst_big, extras.burst_small),
        "",
        *_errors_of(runs),
        "",
        "#### Memory of each server process",
        "",
        memory_table(runs),
        "",
        f"#### Prefix reuse (a shared system prompt, then the same with another user message; "
        f"{m['prefix_tokens']} tokens asked)",
        "",
        prefix_table(runs),
        "",
        "#### Profile of TokenDock's engine thread",
        "",
        profile_markdown(extras.profile, extras.profiled),
        "",
        "#### Targets",
        "",
        *[f"- {verdict(ok)} {text}" for text, ok in checks],
        *([] if checks else ["(--smoke: no targets judged)"]),
        "",
    ]
    return "\n".join(out)


# -- the plot -------------------------------------------------------------------------------


def _nice_top(value: float) -> tuple[float, float]:
    """An axis top ≥ value and a tick step (1, 2 or 5 × 10^k, 4-8 ticks)."""
    if not value or math.isnan(value):
        return 1.0, 0.25
    raw = value / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    return step * math.ceil(value / step), step


def svg(runs: list[ServerRun], title: str, subtitle: str) -> str:
    width, height = 720, 400
    left, right, top, bottom = 70, 210, 60, 50
    pw, ph = width - left - right, height - top - bottom
    levels = sorted({lv.concurrency for run in runs for lv in run.levels})
    peak = max((lv.aggregate_tps for run in runs for lv in run.levels), default=1.0)
    ymax, step = _nice_top(peak * 1.05)

    def x(c: int) -> float:
        if len(levels) == 1:
            return left + pw / 2
        return left + pw * levels.index(c) / (len(levels) - 1)

    def y(v: float) -> float:
        return top + ph * (1 - v / ymax)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left}" y="42" fill="#555">{escape(subtitle)}</text>',
    ]
    ticks = round(ymax / step)
    for i in range(ticks + 1):
        v = step * i
        parts.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" '
            f'stroke="#ddd"/><text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">'
            f"{v:g}</text>"
        )
    for c in levels:
        parts.append(f'<text x="{x(c):.1f}" y="{top + ph + 18}" text-anchor="middle">{c}</text>')
    parts.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 10}" text-anchor="middle">'
        "concurrent streams</text>"
    )
    parts.append(
        f'<text transform="translate(18 {top + ph / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">aggregate generation tokens/s</text>'
    )
    parts.append(
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>'
    )
    for i, run in enumerate(runs):
        color = COLORS.get(run.name, "#444")
        pts = [(x(lv.concurrency), y(lv.aggregate_tps)) for lv in run.levels]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for lv, (px, py) in zip(run.levels, pts, strict=True):
            label = f"{lv.aggregate_tps:.0f}"
            if lv.cut_short:
                label += f" ({lv.cut_short} cut)"
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}"/>')
            ty = py - 8 if i % 2 == 0 else py + 18  # labels above and below, by turns
            parts.append(
                f'<text x="{px + 6:.1f}" y="{ty:.1f}" fill="{color}">{escape(label)}</text>'
            )
        ly = top + 10 + 22 * i
        parts.append(
            f'<line x1="{left + pw + 20}" y1="{ly}" x2="{left + pw + 44}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<text x="{left + pw + 50}" y="{ly + 4}">{escape(run.name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
