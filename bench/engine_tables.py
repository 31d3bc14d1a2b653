"""bench/engine.py's side-by-side report (issue 20): TokenDock against llama.cpp's own C++
`llama-server`, the reference. The comparison per level (tokens/s and TokenDock / llama-server),
the streamed chat row, burst stability, and the targets judged on them (PASS / FAIL; NOT
JUDGED when llama-server was skipped)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.engine_load import Level
from bench.engine_sides import stability

if TYPE_CHECKING:
    from bench.engine_report import ServerRun

REFERENCE = "llama-server"
DOCK = "TokenDock"
COMPARED_LEVELS = [1, 4, 16]
RATIO_TARGET = 1.0
TTFT_FACTOR = 1.1
BURST_TARGET = 0.95

Check = tuple[str, bool | None]  # None: not judged (what it is judged against is missing)


def _f(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _x(value: float) -> str:
    """A ratio as '0.92×' ('–' when unknown)."""
    return "–" if math.isnan(value) else f"{value:.2f}×"


def by_name(runs: list[ServerRun], name: str) -> ServerRun | None:
    return next((r for r in runs if r.name == name), None)


def _tps(level: Level | None) -> float:
    return level.aggregate_tps if level is not None else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def comparison_table(runs: list[ServerRun]) -> str:
    """Tokens/s of each side per level, and each side's ratio to llama-server's."""
    ref = by_name(runs, REFERENCE)
    others = [r for r in runs if r.name != REFERENCE]
    levels = sorted({lv.concurrency for r in runs for lv in r.levels})
    head = "| concurrency | " + (f"{REFERENCE} tok/s | " if ref else "")
    head += " | ".join(
        f"{r.name} tok/s" + (f" | {r.name} / {REFERENCE}" if ref else "") for r in others
    )
    cols = head.count("|")
    rows = [head + " |", "|" + "---:|" * cols]
    for c in levels:
        base = _tps(ref.level(c)) if ref else math.nan
        cells = [str(c)] + ([_f(base)] if ref else [])
        for r in others:
            tps = _tps(r.level(c))
            cells.append(_f(tps))
            if ref:
                cells.append(_x(_ratio(tps, base)))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def level_rows(runs: list[ServerRun], attr: str) -> str:
    """Every level of `attr` ("chat" or "levels") of every side, with its ratio to
    llama-server's at the same concurrency."""
    ref = by_name(runs, REFERENCE)
    rows = [
        "| server | concurrency | requests | complete | cut short | aggregate tok/s "
        f"| × its c=1 | × {REFERENCE} | TTFT p50 (ms) | TTFT p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        levels: list[Level] = getattr(run, attr)
        ones = [x for x in levels if x.concurrency == 1]
        for lv in levels:
            same = [x for x in getattr(ref, attr) if x.concurrency == lv.concurrency] if ref else []
            ratio = _ratio(lv.aggregate_tps, same[0].aggregate_tps) if same else math.nan
            scale = _ratio(lv.aggregate_tps, ones[0].aggregate_tps) if ones else math.nan
            rows.append(
                f"| {run.name} | {lv.concurrency} | {len(lv.outcomes)} | {lv.completed} "
                f"| {lv.cut_short} | {_f(lv.aggregate_tps)} | {_x(scale)} | {_x(ratio)} "
                f"| {_f(lv.ttft_ms(0.5), 0)} | {_f(lv.ttft_ms(0.95), 0)} |"
            )
    return "\n".join(rows)


def burst_table(runs: list[ServerRun], big: int, small: int) -> str:
    rows = [
        f"| server | bursts | c={big} first → last tok/s | last / first | c={small} first → last "
        "tok/s | last / first | cut short | every burst (tok/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        if not run.bursts:
            continue
        cells = []
        for c in (big, small):
            s = stability(run.bursts, c)
            cells += (
                [f"{_f(s.first_tps)} → {_f(s.last_tps)}", f"{_f(s.ratio, 3)}"] if s else ["–", "–"]
            )
        cut = sum(lv.cut_short for lv in run.bursts)
        each = ", ".join(f"{_f(lv.aggregate_tps, 0)}" for lv in run.bursts)
        rows.append(f"| {run.name} | {len(run.bursts)} | {' | '.join(cells)} | {cut} | {each} |")
    return "\n".join(rows)


def _judged(text: str, ok: bool, ref: ServerRun | None) -> Check:
    if ref is None or not ref.levels:
        return (f"{text} (no {REFERENCE} in this run)", None)
    return (text, ok)


def comparison_targets(runs: list[ServerRun], big: int) -> list[Check]:
    """Issue 20's targets: TokenDock against llama-server in the same run."""
    dock, ref = by_name(runs, DOCK), by_name(runs, REFERENCE)
    if dock is None:
        return []
    out: list[Check] = []
    for c in COMPARED_LEVELS:
        mine, theirs = dock.level(c), ref.level(c) if ref else None
        ratio = _ratio(_tps(mine), _tps(theirs))
        complete = mine is not None and mine.cut_short == 0 and bool(mine.outcomes)
        done = f"{mine.completed} of {len(mine.outcomes)}" if mine else "no level"
        text = (
            f"TokenDock / {REFERENCE} at concurrency {c} ≥ {RATIO_TARGET:.1f} with every "
            f"TokenDock request complete: {_x(ratio)} ({_f(_tps(mine))} vs "
            f"{_f(_tps(theirs))} tok/s), {done} complete"
        )
        out.append(_judged(text, ratio >= RATIO_TARGET and complete, ref))
    mine_big = dock.level(big)
    mine_ttft = mine_big.ttft_ms(0.5) if mine_big else math.nan
    their = ref.level(big) if ref else None
    their_ttft = their.ttft_ms(0.5) if their else math.nan
    text = (
        f"TTFT p50 at concurrency {big} ≤ {TTFT_FACTOR}× {REFERENCE}'s: {_f(mine_ttft, 0)} ms vs "
        f"{_f(their_ttft, 0)} ms ({_x(_ratio(mine_ttft, their_ttft))})"
    )
    out.append(_judged(text, mine_ttft <= TTFT_FACTOR * their_ttft, ref))
    rss_ref = ref.peak_rss_mb if ref else math.nan
    text = (
        f"TokenDock peak RSS ≤ {REFERENCE}'s: {_f(dock.peak_rss_mb, 0)} MB vs {_f(rss_ref, 0)} MB"
    )
    out.append(_judged(text, dock.peak_rss_mb <= rss_ref, ref))
    s = stability(dock.bursts, big)
    if s is not None:
        out.append(
            (
                f"TokenDock burst stability: the last of {s.bursts} bursts at concurrency {big} "
                f"≥ {BURST_TARGET:.0%} of the first: {_f(s.first_tps)} → {_f(s.last_tps)} "
                f"tok/s, {_f(s.ratio, 3)}",
                s.ratio >= BURST_TARGET,
            )
        )
    return out


def verdict(ok: bool | None) -> str:
    return "**NOT JUDGED**" if ok is None else "**PASS**" if ok else "**FAIL**"
