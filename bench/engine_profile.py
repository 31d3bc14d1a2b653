"""A py-spy profile of TokenDock's engine worker thread while it serves concurrent streams.

bench/engine.py runs one extra concurrency level (not one of the measured ones) while py-spy
samples the TokenDock server for about `seconds` seconds, with `--threads` and, when it works,
`--native` (then py-spy pauses the process at each sample, so it samples at a lower rate and the
profiled level is slower than a measured one; without `--native` it samples without pausing).
From the raw collapsed stacks it keeps the engine's worker thread (its name starts with
`llama:`) and reports its top functions by self time and TokenDock's functions (and
libllama's `llama_*` entry points, llama_decode among them) by inclusive time, as shares of
that thread's samples. C code called from Python shows as its own frames
with `--native` (llama_decode, ggml's kernels), as its Python caller without.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.pyspy import _frame, ensure_pyspy

ENGINE_THREAD = "llama:"
NATIVE_RATE = 50  # samples/s with --native (each sample pauses the server)
PLAIN_RATE = 200


@dataclass
class EngineProfile:
    native: bool
    seconds: float
    samples: int  # samples of the engine thread
    all_samples: int  # of every thread
    self_fn: list[tuple[str, float]] = field(default_factory=list)  # (function, % of thread)
    inclusive: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""


def _record(
    pyspy: str, pid: int, seconds: float, out: Path, native: bool
) -> subprocess.Popen[bytes]:
    rate = NATIVE_RATE if native else PLAIN_RATE
    cmd = [pyspy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    cmd += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--threads"]
    cmd += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _spy_while(
    pyspy: str, pid: int, seconds: float, out: Path, native: bool, work: Callable[[], object]
) -> str:
    """Run `work()` while py-spy records; py-spy's error text ('' when it wrote samples)."""
    spy = _record(pyspy, pid, seconds, out, native)
    try:
        time.sleep(0.5)  # attached before the load starts
        work()
        _, err = spy.communicate(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode == 0 and out.is_file() and out.stat().st_size:
        return ""
    lines = (err or b"").decode(errors="replace").strip().splitlines()
    return lines[0] if lines else f"py-spy exited with {spy.returncode}"


def _name(raw: str) -> tuple[str, str]:
    """(function, package) of a frame; native code without a symbol (py-spy prints its address)
    is counted per library: `libggml-cpu.so.0 (no symbol)`."""
    name, package = _frame(raw)
    if name.startswith("0x") and " (" in name:
        return name.split(" (", 1)[1].rstrip(")") + " (no symbol)", package
    return name, package


def summarize(path: Path, native: bool, seconds: float, top: int = 12) -> EngineProfile:
    """The engine thread's self time by function and TokenDock's inclusive time."""
    self_fn: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = engine = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        parts = stack.split(";")
        head = parts[0].split(": ", 1)
        if not (parts[0].startswith("thread (") and len(head) == 2):
            continue
        if not head[1].strip('"').startswith(ENGINE_THREAD):
            continue
        frames = [f for f in parts[1:] if not f.startswith("process ")]
        if not frames:
            continue
        engine += n
        self_fn[_name(frames[-1])[0]] += n
        seen: set[str] = set()
        for f in frames:
            name, package = _name(f)
            if (package.startswith("tokendock") or name.startswith("llama_")) and name not in seen:
                seen.add(name)
                incl[name] += n

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / engine) for k, v in c.most_common(top)] if engine else []

    return EngineProfile(native, seconds, engine, total, share(self_fn), share(incl))


def profile_engine(
    pid: int, seconds: float, out_dir: Path, work: Callable[[], object], install: bool = True
) -> EngineProfile | None:
    """Profile server `pid` while `work()` runs: with --native first, without it if py-spy
    cannot (work runs again then). None (with the reason printed) when py-spy is missing and
    `install` is False, or cannot attach at all."""
    pyspy = ensure_pyspy() if install else _installed_pyspy()
    if pyspy is None:
        print("profile skipped: py-spy is not installed", flush=True)
        return None
    errors: list[str] = []
    for native in (True, False):
        out = out_dir / f"engine-pyspy-{'native' if native else 'plain'}.txt"
        error = _spy_while(pyspy, pid, seconds, out, native, work)
        if not error:
            profile = summarize(out, native, seconds)
            profile.note = "; ".join(errors)
            return profile
        errors.append(f"{'--native' if native else 'plain'}: {error}")
    print(f"profile skipped: py-spy could not sample the server ({'; '.join(errors)})")
    return None


def _installed_pyspy() -> str | None:
    import shutil
    import sys

    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_markdown(p: EngineProfile | None, what: str) -> str:
    if p is None:
        return "(no profile: py-spy was not available or could not attach; see the run's log)"
    mode = f"--native, {NATIVE_RATE} Hz" if p.native else f"without --native, {PLAIN_RATE} Hz"
    lines = [
        f"py-spy ({mode}, {p.seconds:.0f} s) during {what}: {p.samples} samples of the engine "
        f"thread (`{ENGINE_THREAD}…`) out of {p.all_samples} of every thread"
        + (f"; {p.note}" if p.note else "")
        + ".",
        "",
        "| engine thread, self time | % | TokenDock and llama_* functions, inclusive | % |",
        "|---|---:|---|---:|",
    ]
    rows = max(len(p.self_fn), len(p.inclusive))
    for i in range(rows):
        a = p.self_fn[i] if i < len(p.self_fn) else ("", None)
        b = p.inclusive[i] if i < len(p.inclusive) else ("", None)
        lines.append(
            f"| {_cell(a[0])} | {'' if a[1] is None else f'{a[1]:.1f}'} "
            f"| {_cell(b[0])} | {'' if b[1] is None else f'{b[1]:.1f}'} |"
        )
    return "\n".join(lines)


def _cell(name: str) -> str:
    return f"`{name.replace('|', '/')}`" if name else ""
