"""What a refused request costs the server (issue 9: "nothing costs the server before it is
paid for").

Starts TokenDock with the embedded model (fresh data directory), makes a zero-credit account,
and sends batches of requests that must be refused — for credit (402), for bounds (400) or for
a bad key (401) — with the largest bodies each kind allows. For each kind it reports the
server's CPU time per request (utime + stime of the server process from /proc, over the whole
batch), the wall time per request, and how many tokenizer calls the batch caused
(`tokendock_tokenizer_calls_total` on /metrics: it must stay 0).

    .venv/bin/python -m bench.refusals [--requests 50] [--smoke]

Results land in docs/reliability.md by hand; --smoke sends 3 requests of each kind.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.harness import cpu_seconds, metric_total, tokendock_running

MODEL = "gemma-3-270m"


@dataclass
class Kind:
    name: str
    path: str
    body: dict[str, Any]
    status: int
    bad_key: bool = False


def kinds() -> list[Kind]:
    turns = [{"role": "user", "content": ""}] * 20_000
    # 1,000,000 characters of 3 UTF-8 bytes each: a 3 MB body within every bound.
    big = [{"role": "user", "content": "€" * 40_000}] * 25
    # 100,000 characters, 300 KB: under what could still fit the window (2 x 4,096 tokens x 48
    # bytes, the longest token), so only the credit check refuses it.
    fits = [{"role": "user", "content": "€" * 4_000}] * 25
    return [
        Kind(
            "402: 300 KB chat, zero credit",
            "/v1/chat/completions",
            {"model": MODEL, "messages": fits},
            402,
        ),
        Kind(
            "400: 3 MB chat, certainly over the context window",
            "/v1/chat/completions",
            {"model": MODEL, "messages": big},
            400,
        ),
        Kind(
            "402: 128 prompts of 7,800 characters, zero credit",
            "/v1/completions",
            {"model": MODEL, "prompt": ["hello there " * 650] * 128, "max_tokens": 1},
            402,
        ),
        Kind(
            "400: 100,000 prompts × n = 8",
            "/v1/completions",
            {"model": MODEL, "prompt": ["a"] * 100_000, "n": 8, "max_tokens": 1},
            400,
        ),
        Kind(
            "400: 20,000 empty turns",
            "/v1/chat/completions",
            {"model": MODEL, "messages": turns},
            400,
        ),
        Kind(
            "400: n = 128 × max_tokens 4000",
            "/v1/chat/completions",
            {"model": MODEL, "messages": big[:1], "n": 128, "max_tokens": 4000},
            400,
        ),
        Kind(
            "401: 3 MB chat, bad key",
            "/v1/chat/completions",
            {"model": MODEL, "messages": big},
            401,
            True,
        ),
    ]


def tokenizer_calls(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    return metric_total(text, "tokendock_tokenizer_calls_total")


def run(requests: int, tmp: Path) -> list[tuple[str, float, float, float, int]]:
    rows = []
    with tokendock_running(tmp) as server:
        _, broke = server.new_key("broke@example.com", "0")
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            for kind in kinds():
                content = orjson.dumps(kind.body)
                key = "td-not-a-real-key-0000000000000000000000" if kind.bad_key else broke
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                calls = tokenizer_calls(server.base_url)
                cpu = cpu_seconds(server.pid)
                started = time.perf_counter()
                for _ in range(requests):
                    resp = client.post(kind.path, content=content, headers=headers)
                    if resp.status_code != kind.status:
                        raise RuntimeError(f"{kind.name}: {resp.status_code} {resp.text[:300]}")
                wall = (time.perf_counter() - started) / requests
                spent = (cpu_seconds(server.pid) - cpu) / requests
                grew = tokenizer_calls(server.base_url) - calls
                rows.append((kind.name, len(content) / 1e6, spent * 1000, wall * 1000, int(grew)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="requests of each kind")
    parser.add_argument("--smoke", action="store_true", help="3 requests of each kind")
    args = parser.parse_args()
    requests = 3 if args.smoke else args.requests
    with tempfile.TemporaryDirectory(prefix="td-refusals-") as tmp:
        rows = run(requests, Path(tmp))
    print(f"\n{requests} requests of each kind; server CPU and wall time per request\n")
    print("| refused request | body MB | server CPU ms | wall ms | tokenizer calls |")
    print("|---|---:|---:|---:|---:|")
    for name, mb, cpu, wall, calls in rows:
        print(f"| {name} | {mb:.2f} | {cpu:.1f} | {wall:.1f} | {calls} |")
    if any(calls for *_, calls in rows):
        raise SystemExit("a refused request reached the tokenizer")


if __name__ == "__main__":
    main()
