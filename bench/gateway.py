"""Gateway benchmark: the mock upstream directly, TokenDock in front of it, and LiteLLM's proxy in
front of it, side by side in one run on this machine.

    make bench-gateway          # = .venv/bin/python -m bench.gateway
    make bench-gateway BENCH_ARGS=--smoke   # seconds: TokenDock end to end, no wrk/LiteLLM
    .venv/bin/python -m bench.gateway --seconds 10 --targets direct,tokendock,litellm

What one run does (every server on 127.0.0.1, on free ports; everything it starts is stopped
by PID at the end, also on errors, Ctrl-C and SIGTERM):

1. starts three mock upstreams (bench/mock_upstream.py): answering at once, after 20 ms, and
   streaming 100 tokens 50-100 ms apart; TokenDock (one process, SQLite, auth + rate limits
   + billing + usage records) and LiteLLM's proxy (one worker, its own virtualenv, installed
   on first use) in front of them; checks one plain and one streamed request through each;
2. wrk (1 thread, `--seconds` per point after a 1 s warm-up) for each mock delay (0, 20 ms) ×
   concurrency (1, 16, 64) × target: requests/s, latency percentiles, errors; the gateway's CPU
   time (utime + stime of its process tree, /proc) over the point ÷ requests completed; the
   mock's requests counter (every request reached the upstream);
3. time to first token: 200 sequential streamed requests (after 20 warm-up) per target;
4. concurrent long-lived streams: 250, 500, 1000, 1500 streams opened over 3 s, each 100 chunks
   50-100 ms apart (~7.5 s); a stream stalls when a read waits > 1 s or it fails;
5. peak RSS (VmHWM) of every process of each gateway;
   then the transcription point (bench/gateway_media.py): `--transcription-uploads` 10 MiB
   WAV uploads through a TokenDock of its own vs straight to the media mock (bench/mock_media.py):
   added latency (median, p95) and RSS growth;
6. when a TokenDock target fails (or `--profile always`): py-spy on TokenDock under the c=64
   load, and the top functions;
7. prints the table, writes bench/results/gateway-<time>.json, and (unless `--no-docs`) the
   results section of docs/benchmarks.md and docs/gateway-bench.png.

Exit status 0 when the run completed (targets are reported PASS/FAIL either way), 1 when a
gateway could not be started or checked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from bench import gateway_report as report
from bench.gateway_load import (
    ensure_wrk,
    wrk_version,
)
from bench.gateway_media import line as transcription_line
from bench.gateway_media import transcription_point
from bench.gateway_phases import (
    MemorySampler,
    idle_cpu,
    profile_tokendock,
    snapshot,
    stream_phase,
    ttft_phase,
    wrk_point,
)
from bench.gateway_plot import plot
from bench.gateway_smoke import run_smoke
from bench.gateway_targets import (
    Mocks,
    Target,
    check_target,
    direct,
    ensure_litellm,
    start_litellm,
    start_mocks,
    start_tokendock,
    tokendock_integrity,
)
from bench.harness import log_problems, machine_facts
from bench.procs import (
    ROOT,
    raise_fd_limit,
    stop,
    stop_all,
)

T = TypeVar("T")
CONCURRENCY = (1, 16, 64)
STREAM_LEVELS = (250, 500, 1000, 1500)


# -- main -----------------------------------------------------------------------------------


def meta_info(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    return {
        **machine_facts(),
        "wrk": wrk_version(wrk),
        "command": " ".join(["python", "-m", "bench.gateway", *sys.argv[1:]]),
        "seconds": args.seconds,
        "slow_ms": args.slow_ms,
    }


def start_targets(
    args: argparse.Namespace, tmp: Path, meta: dict[str, Any]
) -> tuple[Mocks, list[Target], dict[str, str]]:
    """The mocks and every gateway asked for, each checked with one plain and one streamed
    request; a gateway that fails to start or the check is left out, with the reason."""
    fds = raise_fd_limit()
    mocks = start_mocks(tmp, args.slow_ms, sys.executable)
    print(f"mocks: {mocks.ports} (open files limit {fds})", flush=True)
    targets = [direct(mocks)]
    failures: dict[str, str] = {}
    if "tokendock" in args.targets:
        try:
            targets.append(start_tokendock(tmp, mocks, sys.executable))
        except Exception as exc:
            failures["tokendock"] = f"did not start: {exc}"
    if "litellm" in args.targets:
        try:
            meta["litellm"] = ensure_litellm(install=not args.no_install)
            targets.append(start_litellm(tmp, mocks, meta["litellm"]))
        except Exception as exc:
            failures["litellm"] = f"did not start: {exc}"
    for t in list(targets):
        problems = check_target(t)
        print(
            f"{t.label}: {problems or 'OK'} " + (f"(pid {t.proc.pid})" if t.proc else ""),
            flush=True,
        )
        if problems and t.name != "direct":
            failures[t.name] = "smoke check failed: " + "; ".join(problems)
            targets.remove(t)
            if t.proc is not None:
                stop(t.proc)
    if "direct" not in args.targets:
        targets = [t for t in targets if t.name != "direct"]
    return mocks, targets, failures


def measure(
    wrk: str, mocks: Mocks, targets: list[Target], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """The wrk points, time to first token and the stream levels, target by target, with VmHWM
    snapshots between the phases."""
    print(f"\n== wrk: {args.seconds:g} s per point (+{args.warmup:g} s warm-up)", flush=True)
    for scenario in ("fast", "slow"):
        for c in args.concurrency:
            for t in targets:
                res = wrk_point(wrk, t, mocks, scenario, c, args)
                results["points"].append(res)
                print("   " + report.point_line(res), flush=True)

    snapshot(targets, results, "after wrk")
    print(f"\n== time to first token: {args.ttft_requests} sequential streams each", flush=True)
    for t in targets:
        res = ttft_phase(t, args)
        results["ttft"][t.name] = res
        print("   " + report.ttft_line(t.name, res), flush=True)

    print(
        f"\n== concurrent streams: {args.stream_levels}, opened over {args.stream_ramp:g} s",
        flush=True,
    )
    snapshot(targets, results, "after TTFT")
    for t in targets:
        results["streams"][t.name] = stream_phase(t, args)
    snapshot(targets, results, "after streams")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One whole run: start, measure, profile TokenDock when asked (or when it failed a
    target), then memory, logs and TokenDock's ledger after it stopped."""
    wrk = ensure_wrk(install=not args.no_install)
    meta = meta_info(args, wrk)
    print(
        f"{meta['date']} · {meta['nproc']} CPUs · {meta['cpu']} · Python {meta['python']} · "
        f"{meta['wrk']} · loadavg {meta['loadavg_before']}",
        flush=True,
    )
    mocks, targets, failures = start_targets(args, tmp, meta)
    results: dict[str, Any] = {
        "meta": meta,
        "failures": failures,
        "points": [],
        "ttft": {},
        "streams": {},
        "memory": {},
        "notes": {t.name: t.notes for t in targets},
    }
    measured = [t for t in targets if t.proc is not None]
    sampler = MemorySampler(measured)
    results["idle_cpu_pct"] = idle_cpu(measured, 3.0)
    results["rss_phases"] = {t.name: {} for t in measured}
    snapshot(targets, results, "idle")
    print(f"idle CPU over 3 s: {results['idle_cpu_pct']}", flush=True)
    measure(wrk, mocks, targets, args, results)

    td = next((t for t in measured if t.name == "tokendock"), None)
    failed = any(v["pass"] is False for v in report.verdicts(results))
    if td is not None and (args.profile == "always" or (args.profile == "auto" and failed)):
        results["profile"] = profile_tokendock(td, mocks, wrk, args, tmp)

    sampler.stop()
    results["rss_series"] = sampler.series
    for t in measured:
        assert t.proc is not None
        results["memory"][t.name] = t.proc.memory_report()
        results["notes"][t.name].append(log_problems(t.proc.log))
    if td is not None and td.proc is not None and td.server is not None:
        stop(td.proc)
        results["tokendock_integrity"] = tokendock_integrity(td.server)
    if args.transcription_uploads and "tokendock" in args.targets:
        print("\n== transcription: 10 MiB WAV uploads, direct vs TokenDock", flush=True)
        point = transcription_point(tmp, sys.executable, args.transcription_uploads)
        results["transcription"] = point
        if "error" in point:
            failures["tokendock-media"] = point["error"]
        print("   " + transcription_line(point), flush=True)
    meta["loadavg_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per wrk point")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point (0: none)")
    p.add_argument("--slow-ms", type=float, default=20.0, help="delay of the slow mock")
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--targets", default="direct,tokendock,litellm")
    p.add_argument("--ttft-requests", type=int, default=200)
    p.add_argument("--stream-levels", default=",".join(map(str, STREAM_LEVELS)))
    p.add_argument(
        "--transcription-uploads",
        type=int,
        default=20,
        help="10 MiB WAV uploads per target, after 3 warm-ups (bench/gateway_media.py; 0: none)",
    )
    p.add_argument("--stream-ramp", type=float, default=3.0, help="seconds to open each level")
    p.add_argument("--all-levels", action="store_true", help="go on after a level stalls")
    p.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="py-spy on TokenDock: when one of its targets fails (auto)",
    )
    p.add_argument(
        "--profile-streams",
        type=int,
        default=1000,
        help="also profile TokenDock serving this many streams (0: no)",
    )
    p.add_argument("--no-install", action="store_true", help="never install wrk/LiteLLM/py-spy")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, not minutes: TokenDock end to end without wrk or LiteLLM, no targets "
        "judged, nothing written to docs/ (bench/gateway_smoke.py)",
    )
    p.add_argument("--json", type=Path, help="results JSON (default bench/results/gateway-*.json)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.stream_levels = [int(c) for c in args.stream_levels.split(",") if c.strip()]
    args.targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    if not args.targets <= {"direct", "tokendock", "litellm"}:
        p.error("--targets takes direct, tokendock, litellm")
    if not 1 <= args.seconds <= 120 or max(args.stream_levels, default=0) > 5000:
        p.error("--seconds must be 1..120 and stream levels ≤ 5000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through finally: everything is stopped

    signal.signal(signal.SIGTERM, on_signal)
    if args.smoke:
        return run_smoke(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    logs = ROOT / "bench" / "results" / f"gateway-{stamp}-logs"
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        results = run(args, tmp)
    finally:
        stop_all()
        logs.mkdir(parents=True, exist_ok=True)  # bench/results/ is git-ignored
        for kept in [*tmp.glob("*.log"), *tmp.glob("pyspy-*.txt")]:
            shutil.copy(kept, logs / kept.name)
        shutil.rmtree(tmp, ignore_errors=True)
    results["logs"] = str(logs.relative_to(ROOT))
    results["verdicts"] = report.verdicts(results)
    text = report.render(results)
    print("\n" + text)
    path = args.json or ROOT / "bench" / "results" / f"gateway-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if not args.no_docs:
        png = ROOT / "docs" / "gateway-bench.png"
        if plot(results, png):
            print(f"plot: {png.relative_to(ROOT)}")
        report.update_docs(ROOT / "docs" / "benchmarks.md", text, png.name)
        print("docs/benchmarks.md: section 'Gateway (bench/gateway.py)' updated")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
