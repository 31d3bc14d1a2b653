"""Load generators for bench/gateway.py: wrk for throughput and latency, and a small asyncio
HTTP/1.1 client for streams (time to first token, and thousands of long-lived streams).

wrk (Debian's `wrk`, compiled C + LuaJIT) does the request/response load: a generated Lua script
sets the POST body and headers and prints one JSON line from `done()` with the request count,
wrk's error counters (non-2xx/3xx responses are `status` errors) and latency percentiles in µs.

The stream client is raw asyncio (uvloop when installed), not an HTTP library: it timestamps
every read and parses nothing while streaming, so that thousands of streams cost the client
little CPU and a gap it sees is the server's, not its own. Responses are framed by
content-length or by the chunked-encoding terminator, so a connection can be kept alive.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- wrk ------------------------------------------------------------------------------------

LUA = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
%(headers)s
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"requests":%%d,"bytes":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"p999":%%d,' ..
    '"min":%%d,"max":%%d,"mean":%%.3f,"stdev":%%.3f}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.min, latency.max, latency.mean, latency.stdev))
end
"""


PROMPT = [{"role": "user", "content": "Say hello in one short sentence."}]


def body(model: str, stream: bool = False, max_tokens: int = 64) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": max_tokens}
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def ensure_wrk(install: bool) -> str:
    """The wrk binary; installed from Debian with apt-get when missing and allowed."""
    path = shutil.which("wrk")
    if path:
        return path
    if install and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk …", flush=True)
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, env=env)
        path = shutil.which("wrk")
        if path:
            return path
    raise SystemExit(
        "bench/gateway.py needs wrk (a compiled HTTP load tool): `apt-get install -y wrk` "
        "(Debian/Ubuntu), then run it again."
    )


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


def run_wrk(
    wrk: str,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One wrk run (1 thread): the JSON from the Lua `done()` plus requests/s."""
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
        for k, v in {"Content-Type": "application/json", **headers}.items()
    )
    script = LUA % {"body": json.dumps(body, separators=(",", ":")), "headers": header_lines}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = Path(f.name)
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(lua),
        url,
    ]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
        )
    finally:
        lua.unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stderr.strip()}")
    res: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
    return res


# -- a minimal HTTP/1.1 client --------------------------------------------------------------


def build_request(
    host: str, port: int, path: str, body: dict[str, Any], headers: dict[str, str]
) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Response:
    sent: float = 0.0  # perf_counter when the request was written (or connect started)
    first: float | None = None  # first byte of the response
    last: float = 0.0
    max_gap: float = 0.0  # longest wait between reads, request → first byte included
    reads: int = 0
    events: int = 0  # "data:" occurrences seen (approximate: a split marker is missed)
    status: int = 0
    complete: bool = False  # the response ended by its own framing
    error: str | None = None
    tail: bytes = b""
    chunks: list[bytes] = field(default_factory=list)  # only when recording
    times: list[float] = field(default_factory=list)

    def body(self) -> bytes:
        raw = b"".join(self.chunks)
        return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


class Conn(asyncio.Protocol):
    """One connection; `request()` sends one request and waits for the whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.resp: Response | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.record = False
        self.head = b""
        self.headers_done = False
        self.length: int | None = None  # content-length, when given
        self.chunked = False
        self.got = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection: a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.resp is not None and not self.resp.complete and self.resp.error is None:
            self.resp.error = f"connection closed: {exc!r}" if exc else "connection closed early"
        self._finish()

    def _finish(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        r = self.resp
        if r is None:
            return
        gap = now - (r.last if r.first is not None else r.sent)
        if r.first is None:
            r.first = now
        if gap > r.max_gap:
            r.max_gap = gap
        r.last = now
        r.reads += 1
        r.events += data.count(b"data:")
        if self.record:
            r.chunks.append(data)
            r.times.append(now)
        body = data
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(self.head[:end].decode("latin-1"))
            body = self.head[end + 4 :]
            self.headers_done = True
        self.got += len(body)
        r.tail = (r.tail + body)[-512:]
        if (self.length is not None and self.got >= self.length) or (
            self.chunked and r.tail.endswith(b"0\r\n\r\n")
        ):
            r.complete = True
            self._finish()

    def _parse_head(self, head: str) -> None:
        lines = head.split("\r\n")
        assert self.resp is not None
        parts = lines[0].split(" ", 2)
        self.resp.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                self.length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self.chunked = True

    async def request(
        self, raw: bytes, wait_s: float, record: bool = False, started: float | None = None
    ) -> Response:
        """`started`: when the wait began (before connecting), else now."""
        loop = asyncio.get_running_loop()
        self.resp = Response(sent=started if started is not None else time.perf_counter())
        self.waiter = loop.create_future()
        self.record = record
        self.head, self.headers_done, self.length, self.chunked, self.got = (
            b"",
            False,
            None,
            False,
            0,
        )
        if self.transport is None:
            self.resp.error = "not connected"
            return self.resp
        self.transport.write(raw)
        try:
            await asyncio.wait_for(asyncio.shield(self.waiter), wait_s)
        except TimeoutError:
            self.resp.error = f"timeout after {wait_s:g} s"
        return self.resp

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, wait_s: float) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(loop.create_connection(Conn, host, port), wait_s)
    return conn


# -- time to first token --------------------------------------------------------------------

CONTENT = re.compile(rb'"content"\s*:\s*"(?!")')  # a non-empty content delta


def first_token_time(resp: Response) -> float | None:
    """When the read that completed the first non-empty content delta arrived."""
    seen = 0
    raw = b"".join(resp.chunks)
    match = CONTENT.search(raw)
    if match is None:
        return None
    for data, t in zip(resp.chunks, resp.times, strict=True):
        seen += len(data)
        if seen >= match.end():
            return t
    return None


async def ttft_series(
    host: str, port: int, raw: bytes, n: int, warmup: int, budget_s: float = 60.0
) -> dict[str, Any]:
    """`warmup` + `n` sequential streamed requests on one kept-alive connection (stops
    early after `budget_s` seconds)."""
    timeout = 30.0
    deadline = time.perf_counter() + budget_s
    ttft: list[float] = []
    total: list[float] = []
    failures: list[str] = []
    usage_seen = 0
    note = ""
    conn = await connect(host, port, timeout)
    try:
        for i in range(warmup + n):
            if time.perf_counter() > deadline:
                note = f"time budget of {budget_s:g} s used up after {i} requests"
                break
            if conn.transport is None:  # the server closed it: reconnect
                conn = await connect(host, port, timeout)
            resp = await conn.request(raw, timeout, record=True)
            body = resp.body()
            t_first = first_token_time(resp)
            ok = resp.status == 200 and resp.complete and b"[DONE]" in body and t_first is not None
            if i < warmup:
                continue
            if not ok:
                failures.append(f"status {resp.status}, error {resp.error}: {body[:200]!r}")
                continue
            assert t_first is not None
            usage_seen += b'"completion_tokens"' in body
            ttft.append((t_first - resp.sent) * 1000)
            total.append((resp.last - resp.sent) * 1000)
    finally:
        conn.close()
    return {
        "ttft_ms": ttft,
        "total_ms": total,
        "failures": failures,
        "usage_chunks": usage_seen,
        "note": note,
    }


# -- many concurrent streams ----------------------------------------------------------------


async def stream_ramp(
    host: str,
    port: int,
    raw: bytes,
    n: int,
    ramp_s: float,
    stall_s: float = 1.0,
    wait_s: float = 60.0,
) -> dict[str, Any]:
    """Open `n` streams evenly over `ramp_s` seconds, each on its own connection, and follow
    every one to its end. A stream stalls when a read waits > `stall_s` (request → first byte
    included) or when it fails (connect error, status ≠ 200, no [DONE], timeout)."""
    start = time.perf_counter()
    results: list[Response] = []

    async def one(i: int) -> None:
        await asyncio.sleep(i * ramp_s / n)
        t0 = time.perf_counter()
        try:
            conn = await connect(host, port, wait_s)
        except (OSError, TimeoutError) as exc:
            results.append(Response(sent=t0, last=t0, error=f"connect: {exc!r}"))
            return
        try:
            results.append(await conn.request(raw, wait_s, started=t0))
        finally:
            conn.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    ok = [r for r in results if r.status == 200 and r.complete and b"[DONE]" in r.tail]
    failed = [r for r in results if r not in ok]
    stalled = [r for r in ok if r.max_gap > stall_s]
    # the most streams open at one instant (from each stream's start and end)
    marks = sorted([(r.sent, 1) for r in results] + [(r.last or r.sent, -1) for r in results])
    open_now = peak = 0
    for _, d in marks:
        open_now += d
        peak = max(peak, open_now)
    gaps = sorted(r.max_gap for r in ok)
    ttfb = sorted((r.first - r.sent) for r in ok if r.first is not None)
    errors: dict[str, int] = {}
    for r in failed:
        key = r.error or f"status {r.status}, complete {r.complete}, no [DONE]"
        errors[key[:160]] = errors.get(key[:160], 0) + 1
    return {
        "streams": n,
        "ok": len(ok),
        "failed": len(failed),
        "stalled": len(stalled),
        "stall_free": len(failed) == 0 and len(stalled) == 0,
        "peak_open": peak,
        "max_gap_s": gaps[-1] if gaps else None,
        "p99_max_gap_s": gaps[int(0.99 * (len(gaps) - 1))] if gaps else None,
        "ttfb_p50_ms": ttfb[len(ttfb) // 2] * 1000 if ttfb else None,
        "ttfb_max_ms": ttfb[-1] * 1000 if ttfb else None,
        "events_mean": sum(r.events for r in ok) / len(ok) if ok else 0,
        "wall_s": wall,
        "errors": errors,
    }
