"""`python -m bench.gateway --smoke`: the gateway path end to end in seconds, no targets judged.

Starts the mocks and TokenDock exactly as the full run does (a fresh data directory, its own
account and key), then drives TokenDock through the gateway path:

1. one plain and one streamed request, directly and through TokenDock (TokenDock's must carry
   `x-tokendock-cost`: billing is on);
2. 10 sequential streamed requests after 2 warm-up ones (time to first token);
3. 20 concurrent streams of 10 chunks each, opened over half a second;
4. after TokenDock stopped: its usage records (one per request above) and `tokendock ledger
   verify`;
5. the transcription point (bench/gateway_media.py) with one 10 MiB WAV upload per target, no
   warm-up: both answers checked, its own TokenDock's usage record and ledger.

No wrk, no LiteLLM, no py-spy, nothing written to docs/: the results JSON and every log go to
a temporary directory, printed at the end. Exit status 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import gateway_report as report
from bench.gateway_load import body, build_request, stream_ramp, ttft_series
from bench.gateway_media import line as transcription_line
from bench.gateway_media import transcription_point
from bench.gateway_targets import (
    check_target,
    direct,
    start_mocks,
    start_tokendock,
    tokendock_integrity,
)
from bench.harness import run_async
from bench.procs import HOST, stop, stop_all

TTFT_REQUESTS, TTFT_WARMUP = 10, 2
STREAMS, STREAM_CHUNKS, STREAM_RAMP_S = 20, 10, 0.5


def run_smoke(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-smoke-"))
    problems: list[str] = []
    results: dict[str, Any] = {"mode": "smoke", "dir": str(tmp)}
    try:
        mocks = start_mocks(tmp, args.slow_ms, sys.executable, stream_chunks=STREAM_CHUNKS)
        td = start_tokendock(tmp, mocks, sys.executable)
        assert td.proc is not None and td.server is not None
        for target in (direct(mocks), td):
            found = check_target(target)
            print(f"{target.label}: plain + streamed request: {found or 'OK'}", flush=True)
            problems += [f"{target.name}: {p}" for p in found]

        port, model = td.endpoints["fast"]
        raw = build_request(HOST, port, td.path, body(model, stream=True), td.headers)
        ttft = run_async(ttft_series(HOST, port, raw, TTFT_REQUESTS, TTFT_WARMUP, budget_s=30))
        results["ttft"] = ttft
        print("   " + report.ttft_line("tokendock", ttft), flush=True)
        if ttft["failures"] or len(ttft["ttft_ms"]) != TTFT_REQUESTS:
            problems.append(f"TTFT series: {len(ttft['ttft_ms'])} ok, {ttft['failures'][:2]}")

        port, model = td.endpoints["stream"]
        raw = build_request(HOST, port, td.path, body(model, True, 200), td.headers)
        streams = run_async(stream_ramp(HOST, port, raw, STREAMS, STREAM_RAMP_S))
        results["streams"] = streams
        print(
            f"   {STREAMS} concurrent streams: ok {streams['ok']}, failed {streams['failed']}, "
            f"max gap {report.fmt_s(streams['max_gap_s'])} {streams['errors'] or ''}",
            flush=True,
        )
        if streams["ok"] != STREAMS:
            problems.append(f"streams: {streams['ok']}/{STREAMS} ok: {streams['errors']}")

        stop(td.proc)
        integrity = tokendock_integrity(td.server)
        results["tokendock_integrity"] = integrity
        print(f"   TokenDock after the run: {integrity}", flush=True)
        expected = 2 + TTFT_WARMUP + TTFT_REQUESTS + STREAMS
        if integrity["usage_total"] != expected:
            problems.append(f"usage records {integrity['usage_total']}, expected {expected}")
        if integrity["ledger_verify_exit"] != 0:
            problems.append(f"ledger verify: {integrity['ledger_verify']}")

        point = results["transcription"] = transcription_point(tmp, sys.executable, 1, 0)
        print("   " + transcription_line(point), flush=True)
        problems += [f"transcription: {p}" for p in point.get("failures", [])]
        if "error" in point:
            problems.append(f"transcription: {point['error']}")
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        stop_all()
    results["problems"] = problems
    out = tmp / "gateway-smoke.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nsmoke run (no targets judged): {'OK' if not problems else 'FAILED'}")
    for p in problems:
        print(f"- {p}")
    print(f"results and logs: {tmp}")
    return 1 if problems else 0
