"""Start TokenDock for a benchmark: a fresh data directory, its own account and API key.

Every benchmark that talks to TokenDock over HTTP (engine, gateway, soak) starts it with
`start_tokendock()`:

* a new data directory under the bench's temporary directory, so a new SQLite database: the
  first start bootstraps an admin account (`TOKENDOCK_BOOTSTRAP_GRANT` credits) and prints its
  API key once, which is read here from the server's log;
* the model files of `data/models` reused through a symlink (assembled there once, never
  copied per run);
* rate limits lifted (`UNLIMITED_TIERS`) unless the caller names its own tiers;
* the server is a `gateway_procs` process: stopped by PID at the end, also on errors.

`TokenDock.cli()` runs `tokendock` admin commands against the same database (more accounts
and keys, limits, `ledger verify`), also after the server stopped.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway_procs import HOST, ROOT, Proc, free_port, start, wait_http

MODELS_DIR = ROOT / "data" / "models"
KEY_LINE = re.compile(r"Your API key \(shown once\): (td-[A-Za-z0-9]+)")
KEY_ID_LINE = re.compile(r"key (\d+): (td-[A-Za-z0-9]+)")
UNLIMITED_TIERS = {"default": {"rpm": 100_000_000, "tpm": 1_000_000_000, "concurrent": 100_000}}


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
    """`python -m tokendock serve` on a free port with a fresh data directory under `tmp`;
    returns once /ready answers 200 and the bootstrap key was printed."""
    data = fresh_data_dir(tmp, f"{name}-data")
    pinned = settings_env(data, catalog)
    port = free_port()
    full_env = {
        **pinned,
        "TOKENDOCK_HOST": HOST,
        "TOKENDOCK_WORKERS": "1",
        "TOKENDOCK_LOG_LEVEL": "warning",
        "TOKENDOCK_BOOTSTRAP_GRANT": "1000000",
        "TOKENDOCK_RATE_TIERS": json.dumps(UNLIMITED_TIERS),
        **(env or {}),
    }
    cmd = [python, "-m", "tokendock", "serve", "--port", str(port)]
    proc = start(name, cmd, tmp / f"{name}.log", full_env)
    wait_http(f"http://{HOST}:{port}/ready", proc, ready_timeout)
    match = KEY_LINE.search(proc.log.read_text(errors="replace"))
    if match is None:
        raise RuntimeError(f"{name} printed no bootstrap API key:\n{proc.tail()}")
    return TokenDock(proc, port, data, pinned, match.group(1), python)
