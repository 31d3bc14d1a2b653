"""The measured phases of bench/gateway.py, one function each: a wrk point (requests/s, latency,
the gateway's and the mock's CPU), time to first token, concurrent streams at rising levels,
idle CPU and memory (a sampler thread and per-phase VmHWM), and py-spy on TokenDock under load.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import threading
import time
from pathlib import Path
from typing import Any

from bench import gateway_report as report
from bench.gateway_load import body, build_request, run_wrk, stream_ramp, ttft_series
from bench.gateway_targets import Mocks, Target
from bench.harness import run_async
from bench.procs import CLK_TCK, HOST, machine_jiffies, status_kb
from bench.pyspy import collapsed_summary, ensure_pyspy, profile, profile_text


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
