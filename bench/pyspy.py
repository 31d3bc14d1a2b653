"""py-spy on a server the bench started: install it when missing, sample a process while the
bench drives load, and boil the raw collapsed stacks down to the top threads, packages and
functions (self time) and TokenDock's own functions (inclusive time)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def ensure_pyspy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found:
        return found
    print("installing py-spy into the bench's Python (pip install py-spy) …", flush=True)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False, timeout=600
    )
    return str(local) if res.returncode == 0 and local.exists() else None


def profile(pyspy: str, pid: int, seconds: float, out: Path, work: Callable[[], T]) -> T:
    """Run `work()` while py-spy samples `pid` (raw collapsed stacks into `out`)."""
    cmd = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        "--threads",
    ]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        result = work()
        spy.wait(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    return result


def _frame(raw: str) -> tuple[str, str]:
    """('function (short/file.py)', 'package') from a py-spy frame 'fn (path:line)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", raw)
    fn, path = (m.group(1), m.group(2)) if m else (raw, "")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    parts = path.split("/")
    if parts[0] == "tokendock" and len(parts) > 2:
        package = "tokendock." + parts[1]
    elif parts[0] == "stdlib" and len(parts) > 1:
        package = "stdlib:" + parts[1].removesuffix(".py")
    else:
        package = parts[0].removesuffix(".py")
    return f"{fn} ({path})", package


def collapsed_summary(path: Path, top: int = 20) -> dict[str, Any]:
    """From py-spy's raw output (recorded with --threads): the share of each thread, self time
    by package and function (all threads, and the event loop's thread alone), and the
    inclusive time of TokenDock's own functions."""
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    main_fn: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = main_total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0, "error": f"no py-spy output at {path}"}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = "?"
        if parts[0].startswith("thread ("):
            thread = re.sub(r"\d+", "N", parts[0].split(": ", 1)[-1])
        frames = [f for f in parts if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        total += n
        fn, pkg = _frame(frames[-1])
        self_fn[fn] += n
        self_pkg[pkg] += n
        root = _frame(frames[min(1, len(frames) - 1)])[0].split(" (")[0]
        threads[f"{thread} [{root}]" if thread != "MainThread" else thread] += n
        if thread == "MainThread":
            main_total += n
            main_fn[fn] += n
        seen = set()
        for f in frames:
            name, fpkg = _frame(f)
            if fpkg.startswith("tokendock") and name not in seen:
                seen.add(name)
                incl[name] += n

    def share(c: Counter[str], k: int, of: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / of) for name, n in c.most_common(k)] if of else []

    return {
        "samples": total,
        "threads": share(threads, 8, total),
        "self_packages": share(self_pkg, 15, total),
        "self_functions": share(self_fn, top, total),
        "main_thread_self": share(main_fn, top, main_total),
        "tokendock_inclusive": share(incl, top, total),
    }


def profile_text(p: dict[str, Any]) -> str:
    if not p.get("samples"):
        return f"py-spy: no samples ({p.get('error', '')})"
    out = [
        f"load: {p.get('load', '')}",
        f"{p['samples']} samples (200 Hz, every non-idle thread; C code shows as its caller,"
        " so uvloop's own work appears as Runner.run)",
        "",
        "samples by thread:",
    ]
    out += [f"  {v:5.1f} %  {k}" for k, v in p.get("threads", [])]
    out += ["", "self time by package:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["self_packages"]]
    out += ["", "self time by function:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["self_functions"]]
    out += ["", "the event loop's thread alone, self time by function:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p.get("main_thread_self", [])]
    out += ["", "inclusive time, TokenDock's functions:"]
    out += [f"  {v:5.1f} %  {k}" for k, v in p["tokendock_inclusive"]]
    return "\n".join(out)
