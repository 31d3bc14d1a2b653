"""A minimal, fast OpenAI-compatible upstream for the gateway benchmark (bench/gateway.py).

    .venv/bin/python -m bench.mock_upstream [--port 0] [--delay-ms 0] [--chunks 16]
        [--interval-ms 0 | --interval-ms 50-100] [--procs 1] [--models mock-model]

Serves, over HTTP/1.1 with keep-alive, on 127.0.0.1 only:

* `POST /v1/chat/completions` — non-streaming: one JSON completion with a `usage` object;
  `"stream": true`: SSE (chunked transfer encoding) with a role chunk, N content chunks of one
  "token" each, a chunk with `finish_reason`, a usage chunk (`choices: []`) when
  `stream_options.include_usage` is set, then `data: [DONE]`.
  N is `--chunks`, or `max_tokens` / `max_completion_tokens` when that is smaller (then
  `finish_reason` is `length`, else `stop`). `usage.completion_tokens` is N.
* `GET /v1/models` — the `--models` ids.
* `GET /stats` — requests and streams served so far, chat requests in flight and open
  connections (and their peaks), summed over every process; `?reset=1` restarts the peaks
  (with `--procs` > 1, only in the process that answers).

Timing: a response (the first chunk of a stream) is written `--delay-ms` after the request
arrived; stream content chunks are then `--interval-ms` apart (`A-B`: uniform in [A, B] per
chunk; 0: the whole stream in one write).

Fast so that it is never the bottleneck: the parser is httptools (C), the loop uvloop when
installed, JSON orjson when installed; every response is built once per (model, N) and cached;
delays are `loop.call_later` timers, not tasks. `--procs N` forks N processes that accept on
one listening socket. The first line on stdout is JSON: `{"port": P, "pid": PID}`. SIGTERM or
SIGINT stops every process (children also die with the parent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import mmap
import os
import random
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from bench.mock_replies import (
    Cache,
    Config,
    dumps,
    error_response,
    http_response,
    loads,
)

MAX_SLOTS = 64  # processes whose counters /stats can sum
SLOT = struct.Struct("6q")  # see Counters.FIELDS


class Counters:
    """One slot per process in an anonymous shared mapping (so /stats sums every process):
    requests, streams, chat requests in flight and its peak, open connections and its peak."""

    FIELDS = ("requests", "streams", "inflight", "peak_inflight", "connections", "peak_connections")

    def __init__(self, mem: mmap.mmap, slot: int) -> None:
        self.mem = mem
        self.offset = slot * SLOT.size
        self.v = [0] * len(self.FIELDS)

    def _store(self) -> None:
        SLOT.pack_into(self.mem, self.offset, *self.v)

    def begin(self, stream: bool) -> None:
        v = self.v
        v[0] += 1
        v[1] += stream
        v[2] += 1
        if v[2] > v[3]:
            v[3] = v[2]
        self._store()

    def end(self) -> None:
        self.v[2] -= 1
        self._store()

    def connection(self, delta: int) -> None:
        v = self.v
        v[4] += delta
        if v[4] > v[5]:
            v[5] = v[4]
        self._store()

    def reset_peaks(self) -> None:
        """Peaks restart from the current values (this process's slot only)."""
        self.v[3], self.v[5] = self.v[2], self.v[4]
        self._store()

    def total(self) -> dict[str, int]:
        sums = [0] * len(self.FIELDS)
        for i in range(MAX_SLOTS):
            for j, value in enumerate(SLOT.unpack_from(self.mem, i * SLOT.size)):
                sums[j] += value
        return dict(zip(self.FIELDS, sums, strict=True))


# -- the protocol ---------------------------------------------------------------------------


class Request:
    __slots__ = ("body", "keep_alive", "method", "url")

    def __init__(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        self.method, self.url, self.body, self.keep_alive = method, url, body, keep_alive


class MockProtocol(asyncio.Protocol):
    """One connection. Requests are answered in order (a pipelined one waits its turn)."""

    def __init__(self, cfg: Config, cache: Cache, counters: Counters) -> None:
        self.cfg, self.cache, self.counters = cfg, cache, counters
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.busy = False
        self.queue: deque[Request] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.active = False  # a chat request is being answered

    # transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.counters.connection(1)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.counters.connection(-1)
        if self.active:
            self.active = False
            self.counters.end()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(error_response("400 Bad Request", "malformed HTTP", "bad_request"))
            self.close()

    # parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = Request(
            self.parser.get_method(),
            self.url,
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.busy:
            self.queue.append(req)
        else:
            self.handle(req)

    # helpers
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def done(self, keep_alive: bool) -> None:
        self.busy = False
        self.timer = None
        if self.active:
            self.active = False
            self.counters.end()
        if not keep_alive:
            self.close()
        elif self.queue and self.transport is not None:
            self.handle(self.queue.popleft())

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        if delay <= 0:
            fn(*args)
        else:
            self.timer = self.loop.call_later(delay, fn, *args)

    # requests
    def handle(self, req: Request) -> None:
        self.busy = True
        path = req.url.split(b"?", 1)[0].rstrip(b"/")
        if req.method == b"POST" and path.endswith(b"/chat/completions"):
            self.chat(req)
            return
        if req.method == b"GET" and path.endswith(b"/models"):
            self.write(self.cache.models)
        elif req.method == b"GET" and path == b"/stats":
            if b"reset=1" in req.url:
                self.counters.reset_peaks()
            self.write(http_response("200 OK", dumps(self.counters.total())))
        elif req.method == b"GET" and path in (b"/health", b""):
            self.write(http_response("200 OK", b'{"status":"ok"}'))
        else:
            self.write(error_response("404 Not Found", "no such route", "not_found"))
        self.done(req.keep_alive)

    def chat(self, req: Request) -> None:
        try:
            body = loads(req.body)
            model = str(body.get("model") or "mock-model")
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            stream = bool(body.get("stream"))
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
        except (ValueError, AttributeError):
            self.write(error_response("400 Bad Request", "body is not a JSON object", "bad_json"))
            self.done(req.keep_alive)
            return
        n = self.cfg.chunks
        length = isinstance(limit, int) and 0 < limit <= n
        if length:
            n = limit
        self.active = True
        self.counters.begin(stream)
        if not stream:
            self.later(self.cfg.delay, self.reply, self.cache.completion(model, n, length), req)
            return
        parts = self.cache.stream_parts(model, n, length, usage)
        if self.cfg.interval_hi <= 0:  # the whole stream at once
            whole = parts[0] + parts[1] * n + parts[2]
            self.later(self.cfg.delay, self.reply, whole, req)
        else:
            self.later(self.cfg.delay, self.stream_step, parts, n, 0, req)

    def reply(self, data: bytes, req: Request) -> None:
        self.write(data)
        self.done(req.keep_alive)

    def stream_step(
        self, parts: tuple[bytes, bytes, bytes], n: int, sent: int, req: Request
    ) -> None:
        if self.transport is None:
            return
        if sent == 0:
            self.write(parts[0] + parts[1])  # role chunk and the first token together
            sent = 1
        else:
            self.write(parts[1])
            sent += 1
        if sent >= n:
            self.write(parts[2])
            self.done(req.keep_alive)
            return
        lo, hi = self.cfg.interval_lo, self.cfg.interval_hi
        wait = lo if hi <= lo else random.uniform(lo, hi)
        self.timer = self.loop.call_later(wait, self.stream_step, parts, n, sent, req)


# -- processes ------------------------------------------------------------------------------


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def serve(sock: socket.socket, cfg: Config, mem: mmap.mmap, slot: int) -> None:
    cache = Cache(cfg)
    counters = Counters(mem, slot)
    serve_until_stopped(sock, lambda: MockProtocol(cfg, cache, counters), backlog=4096)


def serve_until_stopped(
    sock: socket.socket, protocol: Callable[[], asyncio.Protocol], *, backlog: int
) -> None:
    """Serve `protocol` on `sock` in a new event loop until SIGTERM or SIGINT."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    async def main() -> None:
        server = await loop.create_server(protocol, sock=sock, backlog=backlog)
        await stop
        server.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="before the response")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks (tokens)")
    parser.add_argument("--interval-ms", default="0", help="between stream chunks: N or A-B")
    parser.add_argument("--prompt-tokens", type=int, default=20, help="usage.prompt_tokens")
    parser.add_argument("--procs", type=int, default=1, help="processes on one socket")
    parser.add_argument("--models", default="mock-model", help="ids for GET /v1/models")
    args = parser.parse_args(argv)
    if not 1 <= args.procs <= MAX_SLOTS or args.chunks < 1:
        parser.error(f"--procs must be 1..{MAX_SLOTS}, --chunks ≥ 1")
    cfg = Config(args)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    mem = mmap.mmap(-1, MAX_SLOTS * SLOT.size)
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)

    if args.procs == 1:
        serve(sock, cfg, mem, 0)
        return 0
    children: list[int] = []
    for slot in range(args.procs):
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            try:
                serve(sock, cfg, mem, slot)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
