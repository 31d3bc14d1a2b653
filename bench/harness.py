"""The one harness of the benchmarks: start TokenDock, drive load, write a dated section of docs/.

Every benchmark that talks to TokenDock over HTTP starts it with `start_tokendock()` (or the
`tokendock_running()` context manager):

* on 127.0.0.1 only, on a free port, with a fresh data directory under the bench's temporary
  directory, so a new SQLite database: the first start bootstraps an admin account
  (`TOKENDOCK_BOOTSTRAP_GRANT` credits) and prints its API key once, read here from its log;
* the model files of `data/models` reused through a symlink (assembled there once);
* rate limits lifted (`UNLIMITED_TIERS`) unless the caller names its own tiers;
* a `bench.procs` process: ready within `ready_timeout` seconds or the bench fails, stopped by
  its PID (SIGTERM, SIGKILL after a grace period) at the end, also on errors and at exit.

`TokenDock.cli()` runs `tokendock` admin commands against the same database (more accounts and
keys, limits, `ledger verify`), also after the server stopped.

Load is driven with `run_async()` (uvloop when installed) and measured with `cpu_seconds()` and
`metric_total()` (the server's /metrics counters).

Results land in docs/ through `write_section()`: each bench owns one section between
`<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` and replaces what is between them
(its text carries its own date and `machine_line()`); everything outside stays as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.procs import CLK_TCK, HOST, ROOT, Proc, cpu_ticks, free_port, start, stop, wait_http

T = TypeVar("T")

MODELS_DIR = ROOT / "data" / "models"
KEY_LINE = re.compile(r"Your API key \(shown once\): (td-[A-Za-z0-9]+)")
KEY_ID_LINE = re.compile(r"key (\d+): (td-[A-Za-z0-9]+)")
UNLIMITED_TIERS = {"default": {"rpm": 100_000_000, "tpm": 1_000_000_000, "concurrent": 100_000}}


# -- the server -----------------------------------------------------------------------------


def fresh_data_dir(tmp: Path, name: str = "tokendock-data") -> Path:
    """`tmp/name` with `models` linked to the repository's data/models (created when absent,
    so a model assembled by the server lands there for the next run too)."""
    data = tmp / name
    data.mkdir()
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    (data / "models").symlink_to(MODELS_DIR, target_is_directory=True)
    return data


def settings_env(data_dir: Path, catalog: Path | None = None) -> dict[str, str]:
    """The settings that pin a server (and the CLI) to this data directory and catalog,
    whatever TOKENDOCK_* variables the caller's shell has."""
    from tokendock.config import DEFAULT_CATALOG

    return {
        "TOKENDOCK_DATA_DIR": str(data_dir),
        "TOKENDOCK_DATABASE_URL": f"sqlite+aiosqlite:///{(data_dir / 'tokendock.db').resolve()}",
        "TOKENDOCK_MODELS_FILE": str(catalog or DEFAULT_CATALOG),
    }


def run_cli(
    env: dict[str, str], *args: str, python: str = sys.executable, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`tokendock ARGS…` with `env` on top of this process's environment."""
    return subprocess.run(
        [python, "-m", "tokendock", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@dataclass
class TokenDock:
    """A running (or stopped) TokenDock server and the settings of its database."""

    proc: Proc
    port: int
    data_dir: Path
    env: dict[str, str]  # the TOKENDOCK_* settings it runs with
    key: str  # the bootstrap admin's API key
    python: str = sys.executable

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cli(self, *args: str, check: bool = True) -> str:
        """A `tokendock` admin command against this server's database; its stdout."""
        res = run_cli(self.env, *args, python=self.python)
        if check and res.returncode != 0:
            raise RuntimeError(f"tokendock {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
        return res.stdout

    def new_key(self, email: str, grant: str, name: str = "bench") -> tuple[int, str]:
        """A new account with `grant` credits and one key: (key id, secret)."""
        self.cli("accounts", "create", email, "--grant", grant)
        out = self.cli("keys", "create", email, "--name", name)
        match = KEY_ID_LINE.search(out)
        if match is None:
            raise RuntimeError(f"no key in the output of `tokendock keys create`: {out!r}")
        return int(match.group(1)), match.group(2)

    def ledger_verify(self) -> tuple[int, list[str]]:
        """`tokendock ledger verify`: exit status and its last lines."""
        res = run_cli(self.env, "ledger", "verify", python=self.python)
        return res.returncode, (res.stdout + res.stderr).strip().splitlines()[-5:]

    def usage_by_status(self) -> dict[str, int]:
        """Usage records by status/finish_reason, read from the SQLite file."""
        db = self.data_dir / "tokendock.db"
        if not db.exists():
            return {}
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT status, coalesce(finish_reason, '-'), count(*) FROM usage_records "
                "GROUP BY 1, 2 ORDER BY 3 DESC"
            ).fetchall()
        return {f"{s}/{f}": n for s, f, n in rows}


def start_tokendock(
    tmp: Path,
    env: dict[str, str] | None = None,
    *,
    catalog: Path | None = None,
    python: str = sys.executable,
    name: str = "tokendock",
    ready_timeout: float = 180,
) -> TokenDock:
    """`python -m tokendock serve` on 127.0.0.1, a free port and a fresh data directory under
    `tmp`; returns once /ready answers 200 and the bootstrap key was printed."""
    data = fresh_data_dir(tmp, f"{name}-data")
    pinned = settings_env(data, catalog)
    port = free_port()
    full_env = {
        **pinned,
        "TOKENDOCK_WORKERS": "1",
        "TOKENDOCK_LOG_LEVEL": "warning",
        "TOKENDOCK_BOOTSTRAP_GRANT": "1000000",
        "TOKENDOCK_RATE_TIERS": json.dumps(UNLIMITED_TIERS),
        **(env or {}),
        "TOKENDOCK_HOST": HOST,  # never anything but the loopback, whatever the caller passes
    }
    cmd = [python, "-m", "tokendock", "serve", "--port", str(port)]
    proc = start(name, cmd, tmp / f"{name}.log", full_env)
    try:
        wait_http(f"http://{HOST}:{port}/ready", proc, ready_timeout)
        match = KEY_LINE.search(proc.log.read_text(errors="replace"))
        if match is None:
            raise RuntimeError(f"{name} printed no bootstrap API key:\n{proc.tail()}")
    except BaseException:
        stop(proc)
        raise
    return TokenDock(proc, port, data, pinned, match.group(1), python)


@contextlib.contextmanager
def tokendock_running(
    tmp: Path,
    env: dict[str, str] | None = None,
    *,
    catalog: Path | None = None,
    name: str = "tokendock",
) -> Iterator[TokenDock]:
    """`start_tokendock()` for the block; the server is stopped by PID when it exits."""
    server = start_tokendock(tmp, env, catalog=catalog, name=name)
    try:
        yield server
    finally:
        stop(server.proc)


# -- load and what it cost ------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on uvloop when it is installed (as the server does)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 when it is gone)."""
    return cpu_ticks(pid) / CLK_TCK


def metric_total(metrics_text: str, name: str) -> float:
    """The sum of every sample of metric `name` (all label sets) in Prometheus text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


# -- where it ran ---------------------------------------------------------------------------


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (the platform's processor string elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    """`git describe --always --dirty` of the repository (empty outside a checkout)."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def machine_facts() -> dict[str, Any]:
    """Where and when a run happened, for its results JSON and its section of docs/."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit() or "?",
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- the docs -------------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    """The two lines that delimit bench `name`'s section of a docs file."""
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(doc: Path, name: str, text: str, *, intro: str = "") -> None:
    """Replace what is between bench `name`'s markers in `doc` with `text`. A doc without
    them gets them appended at its end, after `intro` (a heading and a paragraph, say)."""
    begin, end = markers(name)
    block = f"{begin}\n\n{text.strip(chr(10))}\n\n{end}"
    current = doc.read_text(encoding="utf-8") if doc.exists() else ""
    head, found, rest = current.partition(begin)
    if found and end in rest:
        updated = head + block + rest.split(end, 1)[1]
    elif found or end in current:
        raise RuntimeError(f"{doc}: one of the markers of bench:{name} is missing")
    else:
        updated = current.rstrip("\n") + "\n\n" + (intro.strip("\n") + "\n\n" if intro else "")
        updated += block + "\n"
    doc.write_text(updated, encoding="utf-8")


# -- the server's log -------------------------------------------------------------------


def log_problems(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    bad = [ln for ln in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", ln)]
    if not bad:
        return f"log: no ERROR/Traceback lines ({len(lines)} lines)"
    # the exception lines that end tracebacks: "SomeError: message"
    kinds = Counter(
        ln.split(":", 1)[0].strip()
        for ln in lines
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Disconnect|Timeout)\b", ln)
    )
    shown = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common(5))
    return (
        f"log: {len(bad)} ERROR/Traceback lines (exceptions: {shown or 'none named'}); "
        f"first: `{bad[0][:160]}`"
    )
