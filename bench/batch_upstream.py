"""The mock upstream of bench/mock_upstream.py, counting batch lines and interactive requests
apart: what the upstream part of bench/batch.py reads to see how much of a deployment's
concurrency the batch took.

    .venv/bin/python -m bench.batch_upstream [--port 0] [--delay-ms 200] [--chunks 16] ...

The same options, replies and timing as bench/mock_upstream.py (one process). A chat request
whose body holds `BATCH_MARK` (the bench puts it in its batch lines' system prompt) counts as a
batch line, every other one as interactive. `GET /batch-stats` answers the requests, in flight
and peak in flight of each kind; `?reset=1` restarts the peaks from the current values.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import socket
import sys

from bench.mock_replies import Cache, Config, dumps, http_response
from bench.mock_upstream import (
    MAX_SLOTS,
    SLOT,
    Counters,
    MockProtocol,
    Request,
    serve_until_stopped,
)

BATCH_MARK = b"[batch-line]"
KINDS = ("batch", "interactive")


class KindCounts:
    """Requests, in flight and peak in flight, per kind (one process: plain integers)."""

    def __init__(self) -> None:
        self.v = {kind: {"requests": 0, "inflight": 0, "peak_inflight": 0} for kind in KINDS}

    def begin(self, kind: str) -> None:
        row = self.v[kind]
        row["requests"] += 1
        row["inflight"] += 1
        row["peak_inflight"] = max(row["peak_inflight"], row["inflight"])

    def end(self, kind: str) -> None:
        self.v[kind]["inflight"] -= 1

    def reset_peaks(self) -> None:
        for row in self.v.values():
            row["peak_inflight"] = row["inflight"]


class CountingProtocol(MockProtocol):
    """MockProtocol that also counts each chat request under its kind while it is answered."""

    kinds = KindCounts()

    def __init__(self, cfg: Config, cache: Cache, counters: Counters) -> None:
        super().__init__(cfg, cache, counters)
        self.kind = ""  # the kind of the chat request being answered ("" when none)

    def handle(self, req: Request) -> None:
        if req.method == b"GET" and req.url.split(b"?", 1)[0] == b"/batch-stats":
            self.busy = True
            if b"reset=1" in req.url:
                self.kinds.reset_peaks()
            self.write(http_response("200 OK", dumps(self.kinds.v)))
            self.done(req.keep_alive)
            return
        super().handle(req)

    def chat(self, req: Request) -> None:
        self.kind = KINDS[0] if BATCH_MARK in req.body else KINDS[1]
        self.kinds.begin(self.kind)
        super().chat(req)

    def _finished(self) -> None:
        if self.kind:
            self.kinds.end(self.kind)
            self.kind = ""

    def done(self, keep_alive: bool) -> None:
        self._finished()
        super().done(keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finished()
        super().connection_lost(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--delay-ms", type=float, default=200.0, help="before the response")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks (tokens)")
    parser.add_argument("--interval-ms", default="0", help="between stream chunks: N or A-B")
    parser.add_argument("--prompt-tokens", type=int, default=20, help="usage.prompt_tokens")
    parser.add_argument("--models", default="mock-model", help="ids for GET /v1/models")
    args = parser.parse_args(argv)
    cfg = Config(args)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)

    counters = Counters(mmap.mmap(-1, MAX_SLOTS * SLOT.size), 0)
    cache = Cache(cfg)
    serve_until_stopped(sock, lambda: CountingProtocol(cfg, cache, counters), backlog=1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
