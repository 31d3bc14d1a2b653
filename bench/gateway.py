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
6. when a TokenDock target fails (or `--profile always`): py-spy on TokenDock under the c=64
   load, and the top functions;
7. prints the table, writes bench/results/gateway-<time>.json, and (unless `--no-docs`) the
   results section of docs/benchmarks.md and docs/gateway-bench.png.

Exit status 0 when the run completed (targets are reported PASS/FAIL either way), 1 when a
gateway could not be started or checked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

from bench import gateway_report as report
from bench.gateway_load import (
    body,
    build_request,
    ensure_wrk,
    run_wrk,
    stream_ramp,
    ttft_series,
    wrk_version,
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
from bench.harness import log_problems, machine_facts, run_async
from bench.procs import (
    CLK_TCK,
    HOST,
    ROOT,
    machine_jiffies,
    raise_fd_limit,
    status_kb,
    stop,
    stop_all,
)
from bench.pyspy import collapsed_summary, ensure_pyspy, profile, profile_text

T = TypeVar("T")
CONCURRENCY = (1, 16, 64)
STREAM_LEVELS = (250, 500, 1000, 1500)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the measurements -----------------------------------------------------------------------


class MemorySampler:
    """Samples every gateway's memory about once a second (VmRSS peaks between phases)."""

    def __init__(self, targets: list[Target], every_s: float = 1.0) -> None:
        self.targets = targets
        self.every_s = every_s
        self.start = time.monotonic()
        self.series: dict[str, list[tuple[float, float]]] = {t.name: [] for t in targets}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(self.every_s):
            for t in self.targets:
                if t.proc is not None:
                    with contextlib.suppress(Exception):
                        t.proc.sample_memory()
                        rss = sum(status_kb(p, "VmRSS") for p in t.proc.pids()) / 1024
                        self.series[t.name].append((round(time.monotonic() - self.start, 1), rss))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def snapshot(targets: list[Target], results: dict[str, Any], label: str) -> None:
    """Peak RSS (VmHWM, MB, largest process of each gateway) so far, to see which phase
    raised it."""
    for t in targets:
        if t.proc is not None:
            t.proc.sample_memory()
            peak = max(t.proc.peak_kb.values(), default=0) / 1024
            results["rss_phases"][t.name][label] = round(peak, 1)


def idle_cpu(targets: list[Target], seconds: float) -> dict[str, float]:
    """CPU % of each gateway with no request at all (background tasks: probes, sweeps)."""
    before = {t.name: t.proc.cpu_ticks() for t in targets if t.proc}
    time.sleep(seconds)
    return {
        t.name: round(100.0 * (t.proc.cpu_ticks() - before[t.name]) / CLK_TCK / seconds, 1)
        for t in targets
        if t.proc
    }


def wrk_point(
    wrk: str, target: Target, mocks: Mocks, scenario: str, c: int, args: argparse.Namespace
) -> dict[str, Any]:
    model = target.endpoints[scenario][1]
    payload = body(model)
    if args.warmup > 0:
        run_wrk(wrk, target.url(scenario), payload, target.headers, c, args.warmup)
    up0 = mocks.stats(scenario, reset=True)["requests"]
    mock_proc = mocks.procs[scenario]
    g0 = target.proc.cpu_ticks() if target.proc else 0
    m0, (b0, t0), w0, wall0 = mock_proc.cpu_ticks(), machine_jiffies(), children_cpu(), time.time()
    res = run_wrk(wrk, target.url(scenario), payload, target.headers, c, args.seconds)
    g1 = target.proc.cpu_ticks() if target.proc else 0
    m1, (b1, t1), w1, wall1 = mock_proc.cpu_ticks(), machine_jiffies(), children_cpu(), time.time()
    up = mocks.stats(scenario)
    wall = wall1 - wall0
    res.update(
        target=target.name,
        scenario=scenario,
        delay_ms=args.slow_ms if scenario == "slow" else 0.0,
        concurrency=c,
        upstream_requests=up["requests"] - up0,
        upstream_peak_inflight=up["peak_inflight"],
        upstream_peak_connections=up["peak_connections"],
        mock_cpu_pct=100.0 * (m1 - m0) / CLK_TCK / wall,
        wrk_cpu_pct=100.0 * (w1 - w0) / wall,
        machine_busy_pct=100.0 * (b1 - b0) / max(1, t1 - t0),
    )
    if target.proc is not None:
        res["gateway_cpu_pct"] = 100.0 * (g1 - g0) / CLK_TCK / wall
        res["cpu_ms_per_request"] = (g1 - g0) * 1000.0 / CLK_TCK / max(1, res["requests"])
        target.proc.sample_memory()
    return res


def ttft_phase(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    port, model = target.endpoints["fast"]
    raw = build_request(HOST, port, target.path, body(model, stream=True), target.headers)
    out = run_async(ttft_series(HOST, port, raw, args.ttft_requests, 20, budget_s=60))
    if target.proc is not None:
        target.proc.sample_memory()
    return out


def stream_phase(target: Target, args: argparse.Namespace) -> list[dict[str, Any]]:
    port, model = target.endpoints["stream"]
    raw = build_request(HOST, port, target.path, body(model, True, 200), target.headers)
    levels = []
    for n in args.stream_levels:
        g0 = target.proc.cpu_ticks() if target.proc else 0
        res = run_async(stream_ramp(HOST, port, raw, n, args.stream_ramp))
        g1 = target.proc.cpu_ticks() if target.proc else 0
        res["target"] = target.name
        if target.proc is not None:
            res["gateway_cpu_s"] = (g1 - g0) / CLK_TCK
            target.proc.sample_memory()
            res["rss_mb"] = {p: kb / 1024 for p, kb in target.proc.peak_kb.items()}
        levels.append(res)
        print(
            f"   {target.name:9s} {n:5d} streams: ok {res['ok']}, stalled {res['stalled']}, "
            f"failed {res['failed']}, peak open {res['peak_open']}, max gap "
            f"{report.fmt_s(res['max_gap_s'])}, first byte p50 "
            f"{report.fmt_ms(res['ttfb_p50_ms'])}"
            + (f" · {res['errors']}" if res["errors"] else ""),
            flush=True,
        )
        time.sleep(1.0)
        if not res["stall_free"] and not args.all_levels:
            break
    return levels


# -- main -----------------------------------------------------------------------------------


def meta_info(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    return {
        **machine_facts(),
        "wrk": wrk_version(wrk),
        "command": " ".join(["python", "-m", "bench.gateway", *sys.argv[1:]]),
        "seconds": args.seconds,
        "slow_ms": args.slow_ms,
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    wrk = ensure_wrk(install=not args.no_install)
    meta = meta_info(args, wrk)
    print(
        f"{meta['date']} · {meta['nproc']} CPUs · {meta['cpu']} · Python {meta['python']} · "
        f"{meta['wrk']} · loadavg {meta['loadavg_before']}",
        flush=True,
    )
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
    results: dict[str, Any] = {
        "meta": meta,
        "failures": failures,
        "points": [],
        "ttft": {},
        "streams": {},
        "memory": {},
        "notes": {},
    }
    for t in targets:
        results["notes"][t.name] = t.notes
    sampler = MemorySampler([t for t in targets if t.proc is not None])
    results["idle_cpu_pct"] = idle_cpu([t for t in targets if t.proc is not None], 3.0)
    results["rss_phases"] = {t.name: {} for t in targets if t.proc is not None}
    snapshot(targets, results, "idle")
    print(f"idle CPU over 3 s: {results['idle_cpu_pct']}", flush=True)

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

    td = next((t for t in targets if t.name == "tokendock"), None)
    verdicts = report.verdicts(results)
    failed_td = [v for v in verdicts if v["pass"] is False]
    if (
        td is not None
        and td.proc is not None
        and (args.profile == "always" or (args.profile == "auto" and failed_td))
    ):
        results["profile"] = profile_tokendock(td, mocks, wrk, args, tmp)

    sampler.stop()
    results["rss_series"] = sampler.series
    for t in targets:
        if t.proc is not None:
            results["memory"][t.name] = t.proc.memory_report()
            results["notes"][t.name].append(log_problems(t.proc.log))
    if td is not None and td.proc is not None and td.server is not None:
        stop(td.proc)
        results["tokendock_integrity"] = tokendock_integrity(td.server)
    meta["loadavg_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return results


def profile_tokendock(
    td: Target, mocks: Mocks, wrk: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    assert td.proc is not None
    pyspy = ensure_pyspy()
    if pyspy is None:
        return {"error": "py-spy could not be installed"}
    out: dict[str, Any] = {}
    seconds = max(5.0, args.seconds)
    print(f"\n== py-spy on TokenDock (pid {td.proc.pid}), c=64 against the 0 ms mock", flush=True)
    raw = tmp / "pyspy-wrk.txt"
    res = profile(
        pyspy, td.proc.pid, seconds, raw, lambda: wrk_point(wrk, td, mocks, "fast", 64, args)
    )
    out["wrk"] = {"load": report.point_line(res), **collapsed_summary(raw)}
    print(profile_text(out["wrk"]), flush=True)
    if args.profile_streams:
        raw = tmp / "pyspy-streams.txt"
        port, model = td.endpoints["stream"]
        req = build_request(HOST, port, td.path, body(model, True, 200), td.headers)
        n = args.profile_streams
        res2 = profile(
            pyspy,
            td.proc.pid,
            10,
            raw,
            lambda: run_async(stream_ramp(HOST, port, req, n, args.stream_ramp)),
        )
        out["streams"] = {
            "load": f"{n} streams: ok {res2['ok']}, stalled {res2['stalled']}, "
            f"failed {res2['failed']}",
            **collapsed_summary(raw),
        }
        print(profile_text(out["streams"]), flush=True)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per wrk point")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point (0: none)")
    p.add_argument("--slow-ms", type=float, default=20.0, help="delay of the slow mock")
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--targets", default="direct,tokendock,litellm")
    p.add_argument("--ttft-requests", type=int, default=200)
    p.add_argument("--stream-levels", default=",".join(map(str, STREAM_LEVELS)))
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
