"""Soak: TokenDock under minutes of mixed traffic; memory, open files and latency must stay flat
and the ledger must add up at the end.

    make bench-soak                               # = .venv/bin/python -m bench.soak (10 minutes)
    .venv/bin/python -m bench.soak --minutes 20 --warmup-minutes 3
    .venv/bin/python -m bench.soak --smoke        # 15 s, no targets judged, nothing in docs/

Setup (everything on 127.0.0.1, stopped by PID at the end, also on errors and SIGTERM):
TokenDock (`python -m tokendock serve`, one process, SQLite) from a fresh data directory
(bench/harness.py) serving the embedded model `gemma-3-270m` and `mock-chat`, an
upstream model backed by bench/mock_upstream.py (24 tokens, streams 5-15 ms per chunk). Keys,
made with the `tokendock` CLI: the bootstrap admin and three more paying accounts, one account
with zero credits (its requests get 402) and one key limited to `--limited-rpm` requests per
minute (most of its requests get 429).

Traffic (httpx, closed loops with think times, see soak_traffic.py): upstream workers send
non-streamed and streamed chat completions, requests of the zero-credit and the limited key,
and streams they abandon after three events (client disconnects); embedded workers send short
completions to the local model, streamed or not, and abandon some streams too.

Measured: every request (end time, kind, status, latency); every `--sample-seconds` the
server's VmRSS (and its anonymous and file-backed parts) and threads (/proc/PID/status), its
open file descriptors (/proc/PID/fd), its CPU time and the load average. Judged after the
warm-up (soak_report.py): per-minute medians of RSS and of open files within ±5 % of the first
minute after the warm-up; the p99 latency of the last minute at most 20 % above that first
minute's; no unexpected response; `tokendock ledger verify` clean after the server stopped.
Writes the "Soak" section of docs/reliability.md and bench/results/soak-<time>.json. Exit
status 1 when a judgement failed (or, with --smoke, when a request went wrong or the ledger
does not verify).
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import soak_report as report
from bench.harness import TokenDock, start_tokendock
from bench.procs import (
    CLK_TCK,
    ROOT,
    cpu_ticks,
    first_json_line,
    start,
    status_kb,
    stop,
    stop_all,
    wait_http,
)
from bench.soak_traffic import Keys, Plan, run_traffic

DOCS = ROOT / "docs" / "reliability.md"
UPSTREAM_MODEL = "mock-chat"


class Sampler:
    """The server's VmRSS, threads, open files, CPU time and the load average, every few
    seconds, on a thread of its own."""

    def __init__(self, pid: int, every_s: float, t0: float) -> None:
        self.pid, self.every_s, self.t0 = pid, every_s, t0
        self.samples: list[dict[str, float]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self.thread.start()

    def sample(self) -> dict[str, float]:
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            fds = 0
        return {
            "t": round(time.monotonic() - self.t0, 2),
            "rss_mb": status_kb(self.pid, "VmRSS") / 1024,
            # VmRSS = anonymous (heap: a leak shows here) + file-backed (the mmap'd model file,
            # whose pages come in as new tokens are first used) + shared memory
            "rss_anon_mb": status_kb(self.pid, "RssAnon") / 1024,
            "rss_file_mb": status_kb(self.pid, "RssFile") / 1024,
            "threads": status_kb(self.pid, "Threads"),  # a count, read the same way
            "fds": fds,
            "cpu_s": cpu_ticks(self.pid) / CLK_TCK,
            "load1": os.getloadavg()[0],
        }

    def _loop(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.done.wait(self.every_s):
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


def catalog_text(mock_port: int) -> str:
    """The default catalog (the embedded model) plus the upstream model on the mock."""
    from tokendock.config import DEFAULT_CATALOG

    return DEFAULT_CATALOG.read_text() + (
        f'\n[models."{UPSTREAM_MODEL}"]\nengine = "upstream"\ncontext_length = 8192\n'
        f'[models."{UPSTREAM_MODEL}".price]\ninput = "0.10"\noutput = "0.20"\n'
        f'[[models."{UPSTREAM_MODEL}".deployments]]\nname = "mock"\n'
        f'base_url = "http://127.0.0.1:{mock_port}/v1"\nmodel = "mock-model"\n'
    )


def make_keys(td: TokenDock, limited_rpm: int) -> Keys:
    """Accounts and keys through the `tokendock` CLI, against the running server's database
    (one thread per account: each command is a process that takes a second or two to start)."""

    def limited() -> str:
        key_id, secret = td.new_key("limited@soak.example", "1000")
        td.cli("limits", "set", "--key", str(key_id), "--rpm", str(limited_rpm))
        return secret

    with ThreadPoolExecutor(5) as pool:
        payers = [pool.submit(td.new_key, f"payer{i}@soak.example", "1000") for i in range(3)]
        broke = pool.submit(td.new_key, "broke@soak.example", "0")
        slow = pool.submit(limited)
        return Keys(
            payers=[td.key, *(p.result()[1] for p in payers)],
            broke=broke.result()[1],
            limited=slow.result(),
        )


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    mock_cmd = [
        sys.executable,
        "-m",
        "bench.mock_upstream",
        "--port",
        "0",
        "--models",
        "mock-model",
    ]
    mock_cmd += ["--delay-ms", "5", "--chunks", "24", "--interval-ms", "5-15"]
    mock = start("mock", mock_cmd, tmp / "mock.log")
    mock_port = int(first_json_line(mock, 20)["port"])
    wait_http(f"http://127.0.0.1:{mock_port}/health", mock, 20)
    catalog = tmp / "soak-models.toml"
    catalog.write_text(catalog_text(mock_port))
    td = start_tokendock(tmp, catalog=catalog)
    keys = make_keys(td, args.limited_rpm)
    print(f"TokenDock pid {td.pid} at {td.base_url}; mock on port {mock_port}", flush=True)

    plan = Plan(
        base_url=td.base_url,
        seconds=args.minutes * 60,
        upstream_workers=args.upstream_workers,
        embedded_workers=args.embedded_workers,
        upstream_model=UPSTREAM_MODEL,
        embedded_model="gemma-3-270m",
    )
    t0, t0_wall = time.monotonic(), time.time()
    sampler = Sampler(td.pid, args.sample_seconds, t0)
    try:
        requests = run_traffic(plan, keys, t0, progress_every=args.bucket_seconds)
        time.sleep(min(5.0, args.sample_seconds))  # let in-flight settlement finish
        idle = sampler.sample()
    finally:
        sampler.stop()
    # while the server still runs (open holds are listed); not in --smoke, to save seconds
    verify_live = (0, ["not run (--smoke)"]) if args.smoke else td.ledger_verify()
    stop(td.proc)
    exit_code, verify_lines = td.ledger_verify()
    return {
        "meta": {**report.meta(args, started), "traffic_started_unix": t0_wall},
        "requests": requests,
        "samples": sampler.samples,
        "idle_after": idle,
        "usage_records": td.usage_by_status(),
        "ledger_verify_live": verify_live[1],
        "ledger_verify_exit": exit_code,
        "ledger_verify": verify_lines,
        "log_problems": report.log_problems(td.proc.log),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="traffic duration (10)")
    p.add_argument("--warmup-minutes", type=float, default=2.0, help="not judged (2)")
    p.add_argument("--bucket-seconds", type=float, default=60.0, help="table rows (60)")
    p.add_argument("--sample-seconds", type=float, default=5.0, help="RSS/fd sampling (5)")
    p.add_argument("--upstream-workers", type=int, default=6)
    p.add_argument("--embedded-workers", type=int, default=1)
    p.add_argument("--limited-rpm", type=int, default=12, help="RPM of the limited key (12)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/reliability.md")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="15 s in 5 s rows, no targets judged, report in a temporary directory",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.warmup_minutes, args.bucket_seconds = 0.25, 5 / 60, 5.0
        args.sample_seconds, args.upstream_workers, args.no_docs = 1.0, 3, True
    if args.minutes * 60 < 2 * args.bucket_seconds or args.minutes > 24 * 60:
        p.error("--minutes must cover two --bucket-seconds and stay under a day")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through finally: everything is stopped

    signal.signal(signal.SIGTERM, on_signal)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        results = run(args, tmp)
    finally:
        stop_all()
    summary = report.summarize(results, args)
    text = report.render(results, summary, args)
    print("\n" + text)
    # --smoke leaves everything in its temporary directory; a real run keeps the JSON and the
    # logs in bench/results/ (git-ignored) and removes the data directory
    out_dir = tmp if args.smoke else ROOT / "bench" / "results"
    logs = tmp if args.smoke else out_dir / f"soak-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps({**results, "summary": summary}, indent=2, default=str) + "\n")
    doc = logs / "reliability.md" if args.no_docs else DOCS
    report.update_doc(doc, text)
    if not args.smoke:
        for log in tmp.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nresults: {path}\nreport: {doc}\nlogs: {logs}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
