"""The abuse bench's judgements, its table, and its section of docs/reliability.md."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.abuse_http import Outcome
from bench.harness import machine_facts, write_section

REFUSED_CPU = 0.050  # s of server CPU per refused request at most
ENGINE_FACTOR = 3.0  # an admitted request's engine time: at most 3x its billed tokens' plain cost
ENGINE_FLOOR = 0.3  # s: below this the canary's estimated share is the larger error
CANARY_FACTOR = 2.0  # the canary's p95 during a row: below 2x its baseline
STEP_MS = 20.0  # the worst accepted schema: ms per sampling step above a plain request's


@dataclass
class Calibration:
    per_prompt: float  # engine s per prompt token in a plain chat request
    per_completion: float  # engine s per completion token
    canary_p50: float
    canary_p95: float
    canary_cpu: float  # server CPU s outside the engine threads per canary request (baseline)
    canary_engine: float  # engine-thread s per canary request

    def expected(self, prompt: int, completion: int) -> float:
        return prompt * self.per_prompt + completion * self.per_completion


@dataclass
class RowResult:
    ident: str
    title: str
    outcome: Outcome
    seconds: float
    cpu: float  # the whole process, net of the canary's share
    engine: float  # the engine threads, net of the canary's share
    outside_engine: float  # the rest (event loop, tokenizer and database threads), net
    rss_mb: float
    db_mb: float
    log_kb: float
    billed: int  # micro-credits, every account of the row
    prompt_tokens: int  # billed, from the usage rows
    completion_tokens: int
    canary: list[float]  # latencies of the shots started during the row
    canary_failed: int
    traceback_logged: bool
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        statuses = set(self.outcome.statuses)
        if self.prompt_tokens or self.completion_tokens or self.billed:
            return "admitted"
        if statuses and all(400 <= s < 500 for s in statuses):
            return "refused"
        return "served free"

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def judge(row: RowResult, cal: Calibration, plain_step_ms: float) -> None:
    """The issue's targets for this row (and its own checks), into `row.checks`."""
    checks = row.checks
    statuses = row.outcome.statuses
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    designed = sum(
        n for what, n in row.outcome.errors.items() if what.split(" (")[0] in row.outcome.expected
    )
    checks["every request answered, no 5xx but the row's designed ones"] = (
        all(s > 0 for s in statuses) and server_errors <= designed
    )
    checks["no traceback logged"] = not row.traceback_logged
    if row.kind == "refused":  # outside the engine: its threads' spinning is the canary's
        per = row.outside_engine / max(1, row.outcome.requests)
        checks[f"refused: {per * 1000:.0f} ms CPU each < 50"] = per < REFUSED_CPU
    if row.kind == "admitted":
        expected = cal.expected(row.prompt_tokens, row.completion_tokens)
        ratio = row.engine / expected if expected else math.inf
        ok = row.engine <= max(ENGINE_FACTOR * expected, ENGINE_FLOOR)
        checks[f"engine {ratio:.1f}x its billed tokens <= 3x"] = ok
    if row.outcome.delivered and not row.billed:
        checks["tokens delivered were billed"] = False
    if row.ident == "13" and row.completion_tokens:
        step = row.engine * 1000 / row.completion_tokens - plain_step_ms
        checks[f"{step:.1f} ms per step above plain <= 20"] = step <= STEP_MS
    p95 = pct(row.canary, 95)
    checks[f"canary p95 {p95 / cal.canary_p95:.1f}x baseline < 2x"] = (
        p95 < CANARY_FACTOR * cal.canary_p95
    )
    checks["canary never refused"] = row.canary_failed == 0
    checks.update(row.outcome.judged)


def row_notes(r: RowResult) -> list[str]:
    refusals = ", ".join(f"{n}× {e}" for e, n in r.outcome.errors.most_common(4))
    return r.outcome.notes + ([f"refusals: {refusals}"] if refusals else [])


def table(rows: list[RowResult], cal: Calibration, judged: bool) -> str:
    head = (
        "| # | attack | answers | kind | server CPU s | engine s | RSS Δ MB | DB Δ MB | log Δ KB "
        "| billed µc | canary p50 / p95 ms | verdict |"
    )
    out = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        failed = [name for name, ok in r.checks.items() if not ok]
        verdict = "—" if not judged else ("PASS" if not failed else "FAIL: " + "; ".join(failed))
        canary = f"{pct(r.canary, 50) * 1000:.0f} / {pct(r.canary, 95) * 1000:.0f}"
        out.append(
            f"| {r.ident} | {r.title} | {r.outcome.status_text()} | {r.kind} | {r.cpu:.2f} "
            f"| {r.engine:.2f} | {r.rss_mb:+.1f} | {r.db_mb:+.2f} | {r.log_kb:.1f} | {r.billed:,} "
            f"| {canary} | {verdict} |"
        )
    out.append("")
    out.append(
        f"Baseline: canary p50 / p95 {cal.canary_p50 * 1000:.0f} / {cal.canary_p95 * 1000:.0f} ms;"
        f" a plain chat request's engine time {cal.per_prompt * 1000:.2f} ms per prompt token,"
        f" {cal.per_completion * 1000:.1f} ms per completion token."
    )
    notes = [f"- **{r.ident}**: " + "; ".join(row_notes(r)) for r in rows if row_notes(r)]
    return "\n".join(out + (["", *notes] if notes else []))


def machine() -> str:
    """The harness's machine facts and the RAM, on one line."""
    mem = ""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB RAM"
    m = machine_facts()
    return (
        f"`nproc` = {m['nproc']}, {m['cpu']}, {mem} · Linux {m['kernel']} · "
        f"Python {m['python']} · TokenDock at `{m['commit']}` · load average {m['loadavg_before']}"
    )


def render(rows: list[RowResult], cal: Calibration, catalogue: str, db: str, spent: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = sum(1 for r in rows if r.passed)
    return "\n".join(
        [
            f"**Run:** {now} · {machine()} · database {db} · {spent / 60:.1f} minutes",
            "",
            table(rows, cal, judged=True),
            "",
            f"**{passed} of {len(rows)} rows meet every target.**",
            "",
            "#### The catalogue",
            "",
            catalogue,
        ]
    )


def update_doc(path: Path, text: str, intro: str) -> None:
    """Replace the results block of the "Abuse" section (created with `intro` when missing)."""
    write_section(path, "abuse", text, intro=f"## Abuse\n\n{intro}\n\n### Latest run")
