"""`make bench-abuse`: what adversarial requests cost the server and everyone else (issue 18).

Starts TokenDock (fresh data directory, the default catalog, the built-in default rate tier for
the attackers; the canary's and the victims' limits lifted), then:

1. calibrates (no other traffic): finds the engine threads (bench/abuse_probe.py) and measures a
   plain chat request's engine seconds per prompt token and per completion token;
2. starts the canary — another account sending a short chat request every 0.5 s — and takes its
   baseline p50 / p95 over `--baseline` seconds;
3. runs every row of the catalogue (bench/abuse_rows.py: issue 18's rows 1–12; abuse_own.py: a
   few more), each for at least `--row-seconds`, reading before and after it: server CPU-s,
   engine-thread seconds, RSS, database and log growth, the micro-credits billed (balances) and
   the tokens billed (usage rows), and the canary's latencies during the row. CPU and engine
   seconds are net of the canary's share (its baseline cost per request × its requests).

Judged per row (bench/abuse_report.py): a refused request costs < 50 ms of server CPU; an admitted
row's engine time is within 3× what its billed tokens cost in a plain request; the canary's p95
stays below 2× its baseline and it is never refused; 0 cross-tenant cache hits; no 5xx, no
traceback in the log, no tokens delivered unbilled. Prints the table; a full run writes it with
the catalogue into docs/reliability.md ("Abuse"), dated, with the machine.

    .venv/bin/python -m bench.abuse [--rows 1a,3,...] [--postgres] [--no-docs]
    .venv/bin/python -m bench.abuse --smoke     # a few rows, tiny sizes: seconds, nothing judged
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.abuse_http import MODEL, NEVER_STOP, Account, Ctx, Outcome
from bench.abuse_own import OWN_ROWS
from bench.abuse_probe import Canary, Probe, find_engine_threads, thread_cpu
from bench.abuse_report import Calibration, RowResult, judge, pct, render, table, update_doc
from bench.abuse_rows import ROWS, Row
from bench.harness import TokenDock, metric_total, start_tokendock
from bench.procs import ROOT, stop

DOCS = ROOT / "docs" / "reliability.md"
DEFAULT_TIER = {"default": {"rpm": 60, "tpm": 100_000, "concurrent": 4}}  # the built-in one
# role: (credits, limits lifted). Attackers keep the default tier an operator gets.
ROLES = {
    "canary": ("100", True),
    "calib": ("100", True),
    "victim": ("100", True),
    "attacker": ("100", False),
    "broke": ("0", False),
    "prober1": ("1", False),
    "prober2": ("1", False),
    "chain": ("100", False),
    "queuer": ("100", False),
    "nul": ("100", False),
    "disabled": ("100", False),
}
INTRO = """What adversarial requests cost the server and the other tenants. `bench/abuse.py` starts
TokenDock, calibrates a plain request's engine time per token, starts a canary account that
sends a short chat request every 0.5 s, takes its baseline, and runs each attack of the catalogue
below while the canary goes on. Targets: a refused request costs < 50 ms of server CPU; an
admitted request's engine time is within 3× of what its billed tokens cost in a plain chat
request; the canary's p95 stays below 2× its baseline; 0 cross-tenant cache hits.

```sh
make bench-abuse                          # ~10 minutes; writes the section below
make bench-abuse BENCH_ARGS=--smoke       # a few rows, tiny sizes, nothing judged or written
```"""


def create_accounts(server: TokenDock) -> dict[str, Account]:
    specs = [
        {"email": f"{role}@abuse.example", "grant": grant, "unlimited": unlimited}
        for role, (grant, unlimited) in ROLES.items()
    ]
    res = subprocess.run(
        [server.python, str(Path(__file__).with_name("abuse_accounts.py")), json.dumps(specs)],
        capture_output=True,
        text=True,
        env={**os.environ, **server.env},
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    made = json.loads(res.stdout.strip().splitlines()[-1])
    return {role: Account(**m) for role, m in zip(ROLES, made, strict=True)}


async def engine_delta(probe: Probe, ctx: Ctx, body: dict[str, Any]) -> tuple[float, int, int]:
    before = await probe.read()
    status, answer = await ctx.send("calib", "/v1/chat/completions", body)
    if status != 200:
        raise RuntimeError(f"calibration request: {status} {answer}")
    usage = answer["usage"]
    spent = (await probe.read()).engine - before.engine
    return spent, int(usage["prompt_tokens"]), int(usage["completion_tokens"])


async def calibrate(probe: Probe, ctx: Ctx, smoke: bool) -> tuple[float, float]:
    """Find the engine threads, then a plain request's engine s per prompt / completion token."""
    story = [{"role": "user", "content": "Tell me a long story."}]
    gen: dict[str, Any] = {"model": MODEL, "messages": story, "max_tokens": 8 if smoke else 64}
    gen |= {"logit_bias": NEVER_STOP, "temperature": 0}
    before = thread_cpu(probe.pid)
    await ctx.send("calib", "/v1/chat/completions", gen)
    probe.engine_tids = find_engine_threads(probe.pid, before, thread_cpu(probe.pid))
    words = " ".join(f"fact{i}" for i in range(100 if smoke else 900))
    long = {"model": MODEL, "messages": [{"role": "user", "content": words}], "max_tokens": 1}
    e1, p1, _ = await engine_delta(probe, ctx, long)
    gen["messages"] = [{"role": "user", "content": "Tell me another long story."}]
    e2, p2, c2 = await engine_delta(probe, ctx, gen)
    per_prompt = e1 / max(1, p1)
    return per_prompt, max(0.0, e2 - p2 * per_prompt) / max(1, c2)


BOOKKEEPING_WAIT = 15.0  # s for a balance or usage read (a frozen server must not stall the run)


async def usage_rows(ctx: Ctx, roles: list[str]) -> dict[str, dict[str, Any]]:
    """Every usage row of these accounts by request id (the last 1,000 of each)."""
    answers = await asyncio.gather(
        *(ctx.send(r, "/v1/usage?limit=1000", method="GET", wait=BOOKKEEPING_WAIT) for r in roles)
    )
    return {
        row["request_id"]: row for status, body in answers if status == 200 for row in body["data"]
    }


async def balances(ctx: Ctx, roles: list[str]) -> dict[str, int]:
    answers = await asyncio.gather(
        *(ctx.send(r, "/v1/credits", method="GET", wait=BOOKKEEPING_WAIT) for r in roles)
    )
    return {
        role: int(body["balance_micro_credits"])
        for role, (status, body) in zip(roles, answers, strict=True)
        if status == 200
    }


async def engine_idle(ctx: Ctx, seconds: float) -> bool:
    """Wait until the engine runs nothing but (perhaps) the canary's request."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            text = (await ctx.http.get("/metrics", timeout=BOOKKEEPING_WAIT)).text
        except httpx.HTTPError:
            continue
        busy = metric_total(text, "tokendock_engine_running")
        busy += metric_total(text, "tokendock_engine_waiting")
        if busy <= 1:
            return True
        await asyncio.sleep(0.5)
    return False


async def attack(row: Row, ctx: Ctx) -> Outcome:
    outcome = await row.attack(ctx)
    for _ in range(0 if ctx.smoke else row.repeat - 1):
        outcome.add(await row.attack(ctx))
    if row.repeat > 1 and not ctx.smoke:
        outcome.notes.append(f"sent {row.repeat} times")
    return outcome


async def run_row(
    row: Row, ctx: Ctx, probe: Probe, canary: Canary, cal: Calibration, args: argparse.Namespace
) -> RowResult:
    roles = [r for r in ctx.accounts if r != "canary"]
    await asyncio.sleep(0.5)  # the previous row's last settlements land
    paid = await balances(ctx, roles)
    seen = await usage_rows(ctx, roles)
    log_from = probe.log_file.stat().st_size
    shots_before = len(canary.shots)
    r0 = await probe.read()
    t0 = time.monotonic()
    try:
        outcome = await asyncio.wait_for(attack(row, ctx), args.row_timeout)
    except TimeoutError:
        outcome = Outcome(notes=[f"the attack was cut after {args.row_timeout:.0f} s"])
        outcome.statuses[0] += 1
    await asyncio.sleep(max(0.0, args.row_seconds - (time.monotonic() - t0)))
    t1 = time.monotonic()
    await canary.settle()
    r1 = await probe.read()
    shots = canary.window(t0, t1)
    served = len(canary.shots) - shots_before
    left = await balances(ctx, list(paid))
    billed = sum(paid[r] - left.get(r, paid[r]) for r in paid)
    new = [row for rid, row in (await usage_rows(ctx, roles)).items() if rid not in seen]
    prompt = sum(int(row["prompt_tokens"]) for row in new)
    completion = sum(int(row["completion_tokens"]) for row in new)
    with probe.log_file.open("rb") as log:
        log.seek(log_from)
        logged = log.read()
    if not await engine_idle(ctx, 60):
        outcome.notes.append("the engine was still busy 60 s after the row")
    return RowResult(
        ident=row.ident,
        title=row.title,
        outcome=outcome,
        seconds=t1 - t0,
        cpu=max(0.0, r1.cpu - r0.cpu - served * (cal.canary_cpu + cal.canary_engine)),
        engine=max(0.0, r1.engine - r0.engine - served * cal.canary_engine),
        outside_engine=max(0.0, r1.cpu - r1.engine - r0.cpu + r0.engine - served * cal.canary_cpu),
        rss_mb=r1.rss_mb - r0.rss_mb,
        db_mb=(r1.db_bytes - r0.db_bytes) / 1e6,
        log_kb=len(logged) / 1e3,
        billed=billed,
        prompt_tokens=prompt,
        completion_tokens=completion,
        canary=[s.latency for s in shots],
        canary_failed=sum(1 for s in shots if s.status != 200),
        traceback_logged=b"Traceback" in logged,
    )


async def bench(server: TokenDock, probe: Probe, args: argparse.Namespace) -> tuple[Any, ...]:
    accounts = create_accounts(server)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as http:
        ctx = Ctx(server.base_url, accounts, args.smoke, args.request_timeout, http)

        async def disable(email: str) -> None:
            await asyncio.to_thread(server.cli, "accounts", "disable", email)

        ctx.disable = disable
        per_prompt, per_completion = await calibrate(probe, ctx, args.smoke)
        canary = Canary(server.base_url, accounts["canary"].key, MODEL)
        r0 = await probe.read()
        canary.start()
        await asyncio.sleep(args.baseline)
        await canary.settle()
        r1 = await probe.read()
        base = [s.latency for s in canary.shots if s.status == 200]
        n = max(1, len(canary.shots))
        cal = Calibration(
            per_prompt,
            per_completion,
            pct(base, 50),
            pct(base, 95),
            (r1.cpu - r1.engine - r0.cpu + r0.engine) / n,
            (r1.engine - r0.engine) / n,
        )
        plain_step_ms = per_completion * 1000
        results = []
        for row in rows_to_run(args):
            print(f"row {row.ident}: {row.title} …", flush=True)
            result = await run_row(row, ctx, probe, canary, cal, args)
            judge(result, cal, plain_step_ms)
            print(f"  {result.outcome.status_text()} in {result.seconds:.1f} s", flush=True)
            results.append(result)
        await canary.stop()
    return results, cal


def rows_to_run(args: argparse.Namespace) -> list[Row]:
    rows = [*ROWS, *OWN_ROWS]
    if args.rows:
        wanted = set(args.rows.split(","))
        return [r for r in rows if r.ident in wanted]
    return [r for r in rows if r.smoke] if args.smoke else rows


def catalogue() -> str:
    lines = ["| # | attack | what is sent |", "|---|---|---|"]
    for row in [*ROWS, *OWN_ROWS]:
        doc = (row.attack.__doc__ or "").split("\n\n")[0].replace("\n", " ").strip()
        lines.append(f"| {row.ident} | {row.title} | {' '.join(doc.split()) or '—'} |")
    return "\n".join(lines)


def start(tmp: Path, args: argparse.Namespace) -> tuple[TokenDock, Probe, str]:
    env = {"TOKENDOCK_RATE_TIERS": json.dumps(DEFAULT_TIER), "TOKENDOCK_LOG_LEVEL": "warning"}
    pg_url = None
    if args.postgres:
        from tests.e2e.server import new_database

        env["TOKENDOCK_DATABASE_URL"] = new_database("postgres", tmp)
        pg_url = env["TOKENDOCK_DATABASE_URL"].replace("+asyncpg", "")
    server = start_tokendock(tmp, env)
    server.env.update({k: v for k, v in env.items() if k == "TOKENDOCK_DATABASE_URL"})
    db_file = None if pg_url else server.data_dir / "tokendock.db"
    return (
        server,
        Probe(server.pid, db_file, pg_url, server.proc.log),
        "PostgreSQL" if pg_url else "SQLite",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few rows, tiny sizes, nothing judged")
    p.add_argument("--rows", help="only these rows, e.g. 1a,3,8")
    p.add_argument("--postgres", action="store_true", help="on TOKENDOCK_TEST_POSTGRES_URL")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/reliability.md")
    args = p.parse_args()
    args.baseline = 3.0 if args.smoke else 12.0
    args.row_seconds = 1.0 if args.smoke else 6.0
    args.row_timeout = 60.0 if args.smoke else 150.0
    args.request_timeout = 30.0 if args.smoke else 120.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="td-abuse-") as tmp:
        server, probe, db = start(Path(tmp), args)
        try:
            results, cal = asyncio.run(bench(server, probe, args))
        finally:
            stop(server.proc)
    spent = time.monotonic() - started
    if args.smoke:
        print(f"\nbench-abuse --smoke: {len(results)} rows in {spent:.0f} s (nothing judged)\n")
        print(table(results, cal, judged=False))
        return
    print(table(results, cal, judged=True))
    if not args.no_docs and not args.rows:
        update_doc(DOCS, render(results, cal, catalogue(), db, spent), INTRO)
        print(f"\nwritten to {DOCS.relative_to(ROOT)}")
    failed = [r.ident for r in results if not r.passed]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} rows meet every target"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )


if __name__ == "__main__":
    main()
