"""The servers bench/engine.py compares, and their memory.

* TokenDock: `python -m tokendock serve` from a fresh data directory (bench/harness.py)
  with a catalog of its own: the default catalog's entry for the model, with `slots` (sequences
  decoded together), `threads` and (for its deterministic row) `deterministic = true` set by
  the bench, and nothing else (no embedding model loaded next to it, so every server holds one
  model).
* llama.cpp's own C++ `llama-server` (built by bench/llama_server_build.py): `-m <gguf> -np
  <slots> -c <slots × 4096> -t <threads> -tb <threads>`, its defaults otherwise; ready when
  GET /health answers 200.
* llama-cpp-python's own OpenAI server: `python -m llama_cpp.server --model <gguf> --n_ctx …
  --n_threads … --n_threads_batch …`, its defaults otherwise (one model behind a lock,
  `interrupt_requests` on, as shipped).

Both bind 127.0.0.1 on a free port, run as gateway_procs processes (own session, log file,
stopped by PID: SIGTERM, SIGKILL after a grace period; also at exit). `Memory` samples each
server's process tree from /proc while the bench talks to it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import TokenDock, start_tokendock
from bench.procs import CLK_TCK, HOST, Proc, free_port, start, stop, wait_http

READY_TIMEOUT = 180.0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    raise TypeError(f"no TOML for {value!r}")


def catalog_knows(key: str) -> bool:
    """Whether this checkout's catalog has the model key `key` (an unknown key fails the
    server's start: `slots` came with the batching scheduler, `deterministic` after it)."""
    from tokendock.catalog import ModelSpec

    return key in ModelSpec.model_fields


def catalog_text(model_id: str, slots: int, threads: int, deterministic: bool = False) -> str:
    """The default catalog's entry for `model_id` with `slots` and `threads` set, as TOML
    (`slots` and `deterministic = true` only where the catalog knows them)."""
    from tokendock.config import DEFAULT_CATALOG

    entry: dict[str, Any] = tomllib.loads(DEFAULT_CATALOG.read_text())["models"][model_id]
    entry = {**entry, "threads": threads}
    if catalog_knows("slots"):
        entry["slots"] = slots
    if deterministic:
        if not catalog_knows("deterministic"):
            raise ValueError("this checkout's catalog has no `deterministic` key")
        entry["deterministic"] = True
    head = [f'[models."{model_id}"]']
    tables: list[str] = []
    for key, value in entry.items():
        if isinstance(value, dict):
            tables.append(f'\n[models."{model_id}".{key}]')
            tables += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        else:
            head.append(f"{key} = {_toml_value(value)}")
    return "\n".join(["# written by bench/engine.py", *head, *tables]) + "\n"


def slots_in_catalog(catalog: Path) -> int | None:
    """The `slots` the catalog gives its model (None: the key is not there)."""
    models = tomllib.loads(catalog.read_text())["models"]
    return next((m.get("slots") for m in models.values()), None)


@contextmanager
def tokendock(
    tmp: Path, model_id: str, slots: int, threads: int, deterministic: bool = False
) -> Iterator[TokenDock]:
    name = "tokendock-deterministic" if deterministic else "tokendock"
    catalog = tmp / f"{name}-models.toml"
    catalog.write_text(catalog_text(model_id, slots, threads, deterministic))
    server = start_tokendock(tmp, catalog=catalog, name=name, ready_timeout=READY_TIMEOUT)
    try:
        yield server
    finally:
        stop(server.proc)


@dataclass
class LlamaServer:
    proc: Proc
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextmanager
def llama_cpp_python_server(
    tmp: Path, model_path: Path, n_ctx: int, threads: int
) -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server`, ready when /v1/models answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
    cmd += ["--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx)]
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--verbose", "False"]
    with _serving("llama_cpp.server", cmd, tmp / "llama-cpp-server.log", port, "/v1/models") as s:
        yield s


@contextmanager
def cpp_llama_server(
    tmp: Path, binary: Path, model_path: Path, slots: int, n_ctx: int, threads: int
) -> Iterator[LlamaServer]:
    """llama.cpp's `llama-server`: `slots` parallel sequences of `n_ctx` tokens each."""
    port = free_port()
    cmd = [str(binary), "-m", str(model_path), "-np", str(slots), "-c", str(slots * n_ctx)]
    cmd += ["-t", str(threads), "-tb", str(threads), "--host", HOST, "--port", str(port)]
    with _serving("llama-server", cmd, tmp / "llama-server.log", port, "/health") as server:
        yield server


@contextmanager
def _serving(name: str, cmd: list[str], log: Path, port: int, ready: str) -> Iterator[LlamaServer]:
    """Start `cmd`, wait until GET `ready` answers, stop it by PID afterwards."""
    proc = start(name, cmd, log)
    try:
        wait_http(f"http://{HOST}:{port}{ready}", proc, READY_TIMEOUT)
        yield LlamaServer(proc, port)
    finally:
        stop(proc)


def busy_ticks() -> int:
    """CPU time spent by everything on the machine (/proc/stat's first line, idle and iowait
    left out), in clock ticks."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal


def own_ticks() -> int:
    times = os.times()
    return round((times.user + times.system) * CLK_TCK)


class Memory:
    """Samples a server's process tree (VmRSS, VmHWM from /proc) every `period` seconds in a
    thread while in use; `peak_mb()` is the largest VmHWM (the kernel's high-water mark,
    model load included) summed over the tree's processes. Also measures how much CPU the
    rest of the machine (neither the server, nor the bench's servers in `also_ours`, nor this
    process) used meanwhile: `others_pct()`, a share of all cores."""

    def __init__(self, proc: Proc, period: float = 0.5, also_ours: tuple[Proc, ...] = ()):
        self._proc = proc
        self._also_ours = also_ours  # servers of the bench running beside it: not "others"
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu: list[tuple[float, int, int]] = []  # (time, machine busy, server + bench)

    def _cpu_mark(self) -> None:
        ours = self._proc.cpu_ticks() + own_ticks() + sum(p.cpu_ticks() for p in self._also_ours)
        self._cpu.append((time.monotonic(), busy_ticks(), ours))

    def others_pct(self) -> float:
        (t0, busy0, ours0), (t1, busy1, ours1) = self._cpu[0], self._cpu[-1]
        capacity = (t1 - t0) * CLK_TCK * (os.cpu_count() or 1)
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity * 100 if capacity else 0.0

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._proc.sample_memory()

    def __enter__(self) -> Memory:
        self._proc.sample_memory()
        self._cpu_mark()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._proc.sample_memory()
        self._cpu_mark()

    def peak_mb(self) -> float:
        return sum(self._proc.peak_kb.values()) / 1024

    def max_sampled_mb(self) -> float:
        return sum(self._proc.rss_kb.values()) / 1024
