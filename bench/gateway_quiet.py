"""The quiet-server experiment of issue 10: latency TokenDock adds at c=1 against the 0 ms and the
20 ms mock, and its CPU time per request, in a few seconds (no LiteLLM, no streams).

    .venv/bin/python -m bench.gateway_quiet                   # 5 s per point, c=1
    .venv/bin/python -m bench.gateway_quiet --seconds 10 -c 1 -c 64
    .venv/bin/python -m bench.gateway_quiet --hold 120        # keep the servers up for py-spy

Each point: wrk (1 thread) straight to the mock, then through TokenDock; the added p50/p99 is
TokenDock's minus the mock's, CPU-ms/request is TokenDock's process tree (utime + stime) over the
point ÷ its requests. Environment variables of the form TOKENDOCK_* reach the server, so a
setting can be tried without a code change.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway_load import body, ensure_wrk, run_wrk
from bench.gateway_targets import Target, direct, start_mocks, start_tokendock
from bench.procs import CLK_TCK, stop_all


def point(wrk: str, target: Target, scenario: str, c: int, seconds: float) -> dict[str, float]:
    payload = body(target.endpoints[scenario][1])
    url, proc = target.url(scenario), target.proc
    run_wrk(wrk, url, payload, target.headers, c, 1)  # warm-up
    ticks = proc.cpu_ticks() if proc else 0
    res = run_wrk(wrk, url, payload, target.headers, c, seconds)
    cpu = ((proc.cpu_ticks() - ticks) / CLK_TCK) if proc else 0.0
    return {
        "p50": res["p50"] / 1000,
        "p99": res["p99"] / 1000,
        "rps": res["rps"],
        "cpu_ms": 1000 * cpu / max(1, res["requests"]),
        "errors": res["errors"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("--slow-ms", type=float, default=20)
    parser.add_argument("--only", choices=("fast", "slow"), help="one mock instead of both")
    parser.add_argument("--hold", type=float, default=0, help="then keep serving this long")
    args = parser.parse_args()
    levels = args.concurrency or [1]
    wrk = ensure_wrk(install=False)
    with tempfile.TemporaryDirectory(prefix="td-quiet-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            mocks = start_mocks(tmp, args.slow_ms, sys.executable, stream_chunks=4)
            td = start_tokendock(tmp, mocks, sys.executable)
            print(f"tokendock pid {td.proc.pid if td.proc else '?'} port {td.endpoints['fast'][0]}")
            for c in levels:
                for scenario in (args.only,) if args.only else ("fast", "slow"):
                    base = point(wrk, direct(mocks), scenario, c, args.seconds)
                    ours = point(wrk, td, scenario, c, args.seconds)
                    print(
                        f"c={c:<3} {scenario:<4} mock p50 {base['p50']:6.2f} ms | TokenDock "
                        f"p50 {ours['p50']:6.2f} p99 {ours['p99']:6.2f} ms, added p50 "
                        f"{ours['p50'] - base['p50']:+.2f} p99 {ours['p99'] - base['p99']:+.2f}"
                        f" ms, {ours['rps']:7.0f} req/s, {ours['cpu_ms']:.2f} CPU-ms/req,"
                        f" errors {ours['errors']:.0f}",
                        flush=True,
                    )
            if args.hold:
                print(f"holding {args.hold:g} s (pid {os.getpid()})", flush=True)
                time.sleep(args.hold)
        finally:
            stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
