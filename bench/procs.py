"""Processes for bench/gateway.py: start, wait for, measure (/proc) and stop what the bench runs.

Every process is started here with its own session and log file, registered, and stopped by
its PID (SIGTERM, then SIGKILL after a grace period) in `stop_all()`, which bench/gateway.py
calls in `finally` and atexit. Descendants seen while measuring (LiteLLM's workers, the mock's
forks) are remembered with their start time and killed by PID too if they outlive their parent;
nothing the bench did not start is ever signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by every child): thousands of
    streams need thousands of sockets in the client, the gateway and the mock."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


# -- /proc ----------------------------------------------------------------------------------


def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """The fields after `comm` of /proc/PID/stat (of thread `tid` when given); None when gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22: starttime


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid` (0 when it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0  # fields 14, 15


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime of each live thread of `pid` (a thread that ends meanwhile is left out)."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            fields = _stat_fields(pid, int(tid))
            if fields:
                out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (idle and iowait are not
    busy); (0, 0) where there is no /proc."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def descendants(pid: int) -> list[int]:
    """`pid` and every live descendant, from /proc/*/stat parent links."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
        todo.extend(parents.get(p, []))
    return out


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


# -- managed processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, int] = field(default_factory=dict)  # pid → start time, descendants included
    peak_kb: dict[int, int] = field(default_factory=dict)  # pid → max VmHWM seen
    rss_kb: dict[int, int] = field(default_factory=dict)  # pid → max VmRSS sampled

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """The process tree now; remembered so that stragglers can be stopped later."""
        pids = descendants(self.pid) if self.popen.poll() is None else []
        for p in pids:
            if p not in self.seen:
                st = start_time(p)
                if st is not None:
                    self.seen[p] = st
        return pids

    def cpu_ticks(self) -> int:
        return sum(cpu_ticks(p) for p in self.pids())

    def sample_memory(self) -> None:
        for p in self.pids():
            self.peak_kb[p] = max(self.peak_kb.get(p, 0), status_kb(p, "VmHWM"))
            self.rss_kb[p] = max(self.rss_kb.get(p, 0), status_kb(p, "VmRSS"))

    def memory_report(self) -> list[dict[str, object]]:
        """Per process: VmHWM (the kernel's high-water mark, start-up included) and the
        largest VmRSS sampled while the bench ran (about once a second)."""
        self.sample_memory()
        return [
            {
                "pid": p,
                "peak_rss_mb": kb / 1024,
                "max_sampled_rss_mb": self.rss_kb.get(p, 0) / 1024,
                "cmd": cmdline(p),
            }
            for p, kb in sorted(self.peak_kb.items())
        ]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


REGISTRY: list[Proc] = []


def start(
    name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Proc:
    handle = log.open("wb")
    popen = subprocess.Popen(
        cmd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,  # a Ctrl-C in the terminal reaches the bench, which stops it
    )
    handle.close()
    proc = Proc(name, popen, log)
    REGISTRY.append(proc)
    return proc


def _signal_if_same(pid: int, started: int, sig: int) -> None:
    """Signal `pid` only while it is still the process we saw (not a reused PID)."""
    if start_time(pid) == started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(proc: Proc) -> None:
    proc.pids()  # remember the current tree before the parent goes
    if proc.popen.poll() is None:
        proc.popen.terminate()
        try:
            proc.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)
    for pid, started in proc.seen.items():
        if pid != proc.pid:
            _signal_if_same(pid, started, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(
        start_time(p) == s for p, s in proc.seen.items() if p != proc.pid
    ):
        time.sleep(0.1)
    for pid, started in proc.seen.items():
        if pid != proc.pid:
            _signal_if_same(pid, started, signal.SIGKILL)


def stop_all() -> None:
    while REGISTRY:
        proc = REGISTRY.pop()  # gateways (started last) first, then the mocks
        try:
            stop(proc)
        except Exception as exc:  # keep stopping the others
            print(f"warning: stopping {proc.name} (pid {proc.pid}): {exc!r}", file=sys.stderr)


atexit.register(stop_all)


def wait_http(
    url: str,
    proc: Proc,
    timeout: float,
    ok: Iterable[int] = (200,),
    headers: dict[str, str] | None = None,
) -> None:
    """Poll `url` until it answers with a status in `ok`; fail early if `proc` exited."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}; log {proc.log}:\n{proc.tail()}"
            )
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code in ok:
                return
        except (OSError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"{proc.name}: {url} not ready after {timeout:.0f} s ({last}):\n{proc.tail()}"
    )


def first_json_line(proc: Proc, timeout: float) -> dict[str, Any]:
    """The first line of `proc`'s log parsed as JSON (the mock prints its port there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = proc.log.read_text(errors="replace")
            if "\n" in text:
                line = text.split("\n", 1)[0]
                try:
                    return dict(json.loads(line))
                except ValueError:
                    raise RuntimeError(f"{proc.name}: unexpected first line {line!r}") from None
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {proc.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: no output after {timeout:.0f} s")


def http_json(
    url: str,
    body: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib: (status, headers, body), HTTP errors included."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
