"""The transcription point of bench/gateway.py: a 10 MiB WAV upload through TokenDock against the
same upload straight to the media mock (bench/mock_media.py).

A TokenDock of its own (fresh SQLite data directory, one worker, its catalog one transcription
model `whisper-bench` priced by the second, served by the mock) so that neither the other
phases' load nor their memory shows in this point. Sequential uploads over one keep-alive
connection per target, alternating target upload by upload (drift hits both alike), after
warm-ups; the multipart body (model first, as the SDKs send it) is built once per target, so
the client's own work is the same on both sides. Each answer is checked (200, the mock's text).

Judged (`verdicts()`): TokenDock's added latency, median and p95, at most 50 ms + 10 % of direct;
TokenDock's RSS growth (VmRSS of its process tree after the warm-ups vs after the uploads) at
most 5 MB. Afterwards its usage records (one per upload) and `tokendock ledger verify`.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.gateway_targets import tokendock_integrity
from bench.harness import start_tokendock
from bench.mock_media_replies import wav_bytes
from bench.procs import HOST, Proc, descendants, first_json_line, start, status_kb, stop, wait_http

SIZE = 10 * 1024 * 1024  # bytes of audio: 327.68 s of 16 kHz 16-bit mono
UPLOADS, WARMUP = 20, 3
MODEL, UPSTREAM_MODEL = "whisper-bench", "openai/whisper-large-v3"
PER_SECOND = "0.0001"  # credits per second: 100 µc
BOUNDARY = "gateway-bench-7c1e"
ADDED_MS, ADDED_SHARE, RSS_GROWTH_MB = 50.0, 0.10, 5.0


def form(model: str, audio: bytes) -> bytes:
    """The multipart body the SDKs send: the fields, then the file."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + audio + f"\r\n--{BOUNDARY}--\r\n".encode()


def catalog(mock_port: int) -> str:
    return (
        f'[models."{MODEL}"]\nengine = "upstream"\ntask = "transcription"\n'
        f'[models."{MODEL}".price]\nunit = "second"\nper_unit = "{PER_SECOND}"\n'
        f'[[models."{MODEL}".deployments]]\nname = "mock-media"\n'
        f'base_url = "http://{HOST}:{mock_port}/v1"\nmodel = "{UPSTREAM_MODEL}"\n'
    )


def start_media_mock(tmp: Path, python: str) -> tuple[Proc, int]:
    proc = start("mock-media", [python, "-m", "bench.mock_media", "--port", "0"], tmp / "mm.log")
    port = int(first_json_line(proc, 20)["port"])
    wait_http(f"http://{HOST}:{port}/health", proc, 20)
    return proc, port


def rss_mb(proc: Proc) -> float:
    return sum(status_kb(p, "VmRSS") for p in descendants(proc.pid)) / 1024


class Uploader:
    """One keep-alive connection to a target, and the body it sends."""

    def __init__(self, port: int, body: bytes, headers: dict[str, str]):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=120)
        self.body = body
        self.headers = {
            **headers,
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(body)),
        }

    def once(self) -> tuple[float, str | None, dict[str, str]]:
        """(milliseconds to the whole answer, the problem or None, the answer's headers)."""
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", "/v1/audio/transcriptions", self.body, self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            return (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}", {}
        ms = (time.perf_counter() - t0) * 1000
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return ms, f"HTTP {resp.status}: {data[:200]!r}", headers
        if not json.loads(data).get("text", "").startswith("Mock transcribe of bench.wav"):
            return ms, f"unexpected answer {data[:200]!r}", headers
        return ms, None, headers


def measure(
    direct: Uploader, gateway: Uploader, td: Proc, uploads: int, warmup: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"direct_ms": [], "tokendock_ms": [], "failures": []}
    out["rss_start_mb"] = rss_mb(td)
    for i in range(warmup + uploads):
        if i == warmup:
            out["rss_before_mb"] = rss_mb(td)
        for name, side in (("direct", direct), ("tokendock", gateway)):
            ms, problem, headers = side.once()
            if problem:
                out["failures"].append(f"{name}: {problem}")
            elif i >= warmup:
                out[f"{name}_ms"].append(ms)
            if name == "tokendock" and "x-tokendock-cost" in headers:
                out["cost_header"] = headers["x-tokendock-cost"]
    out["rss_after_mb"] = rss_mb(td)
    return out


def transcription_point(
    tmp: Path, python: str = sys.executable, uploads: int = UPLOADS, warmup: int = WARMUP
) -> dict[str, Any]:
    """Start the mock and a TokenDock, measure, stop both; the results (with `error` when a
    server did not start)."""
    audio = wav_bytes(SIZE / 32_000)
    res: dict[str, Any] = {"size_bytes": len(audio), "uploads": uploads, "warmup": warmup}
    mock, port = start_media_mock(tmp, python)
    try:
        models = tmp / "tokendock-media-models.toml"
        models.write_text(catalog(port))
        td = start_tokendock(
            tmp,
            {"TOKENDOCK_BOOTSTRAP_GRANT": "1000000"},
            catalog=models,
            python=python,
            name="tokendock-media",
        )
    except Exception as exc:
        stop(mock)
        return {**res, "error": f"did not start: {exc}"}
    try:
        direct = Uploader(port, form(UPSTREAM_MODEL, audio), {"Authorization": "Bearer x"})
        gateway = Uploader(td.port, form(MODEL, audio), {"Authorization": f"Bearer {td.key}"})
        res.update(measure(direct, gateway, td.proc, uploads, warmup))
        direct.conn.close()
        gateway.conn.close()
    finally:
        stop(td.proc)
        stop(mock)
    integrity = res["integrity"] = tokendock_integrity(td)
    if integrity["usage_total"] != warmup + uploads or integrity["ledger_verify_exit"] != 0:
        res["failures"].append(f"TokenDock after the run: {integrity}")
    return res


# -- report ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def added(res: dict[str, Any], q: float) -> tuple[float | None, float | None]:
    """(TokenDock's added latency at percentile q, its allowance) in ms."""
    g, d = pct(res.get("tokendock_ms", []), q), pct(res.get("direct_ms", []), q)
    if g is None or d is None:
        return None, None
    return g - d, ADDED_MS + ADDED_SHARE * d


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The transcription targets, in bench/gateway_report.py's shape."""
    res = results.get("transcription") or {}
    out = []
    for name, q in (("median", 50.0), ("p95", 95.0)):
        value, limit = added(res, q)
        out.append(
            {
                "target": f"TokenDock added {name} ≤ 50 ms + 10 % of direct (10 MiB WAV upload)",
                "value": "not measured"
                if value is None
                else f"{value:,.2f} ms (allowed {limit:,.2f} ms)",
                "pass": None if value is None or limit is None else value <= limit,
            }
        )
    growth = (
        res["rss_after_mb"] - res["rss_before_mb"]
        if "rss_after_mb" in res and "rss_before_mb" in res
        else None
    )
    out.append(
        {
            "target": f"TokenDock RSS growth ≤ {RSS_GROWTH_MB:g} MB over the uploads",
            "value": "not measured" if growth is None else f"{growth:,.2f} MB",
            "pass": None if growth is None else growth <= RSS_GROWTH_MB and not res["failures"],
        }
    )
    return out


def line(res: dict[str, Any]) -> str:
    """One line for the console and the report."""
    if "error" in res:
        return f"transcription point: {res['error']}"
    d, g = res.get("direct_ms", []), res.get("tokendock_ms", [])

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    return (
        f"transcription ({res['size_bytes'] / 2**20:.0f} MiB WAV, {len(g)}/{res['uploads']} "
        f"uploads after {res['warmup']} warm-ups): direct median {ms(pct(d, 50))} / p95 "
        f"{ms(pct(d, 95))} ms, TokenDock median {ms(pct(g, 50))} / p95 {ms(pct(g, 95))} ms; "
        f"TokenDock VmRSS {res.get('rss_start_mb', 0):.1f} MB at start, "
        f"{res.get('rss_before_mb', 0):.1f} after the warm-ups, "
        f"{res.get('rss_after_mb', 0):.1f} after the uploads"
        + (f"; failures: {res['failures'][:3]}" if res.get("failures") else "")
    )


def section(results: dict[str, Any]) -> list[str]:
    """The report's lines of the transcription point (empty when it did not run)."""
    res = results.get("transcription")
    if not res:
        return []
    out = ["", "#### Transcription upload (bench/gateway_media.py)", "", f"- {line(res)}"]
    integ = res.get("integrity")
    if integ:
        out.append(
            f"- its TokenDock after the run: usage records {integ.get('usage_records')}, "
            f"`ledger verify` exit {integ.get('ledger_verify_exit')}"
        )
    return out
