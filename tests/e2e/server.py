"""Start the real `tokendock serve` process on a free port and wait until its model is loaded.

Each server gets its own fresh database: a SQLite file, or (when TOKENDOCK_TEST_POSTGRES_URL
names a PostgreSQL server) a new PostgreSQL database. On first start the server bootstraps an
admin account with credits and prints one API key, which the fixture reads from its log.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TOKENDOCK_TEST_DATA_DIR", ROOT / "data"))
POSTGRES_URL = os.environ.get("TOKENDOCK_TEST_POSTGRES_URL")  # postgresql+asyncpg://u:p@h/db
BACKENDS = ["sqlite", *(["postgres"] if POSTGRES_URL else [])]
UNLIMITED_TIERS = '{"default": {"rpm": 0, "tpm": 0, "concurrent": 0}}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / ('td-' + secrets.token_hex(4) + '.db')}"
    assert POSTGRES_URL
    import asyncpg  # type: ignore[import-untyped]

    name = "td_test_" + secrets.token_hex(6)
    base, _, _ = POSTGRES_URL.rpartition("/")

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return f"{base}/{name}"


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    key: str = ""

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> str:
        """Run a `tokendock` admin command against this server's database."""
        out = subprocess.run(
            [sys.executable, "-m", "tokendock", *args, "--database-url", self.database_url],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            cwd=ROOT,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"tokendock {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def new_key(self, email: str, grant: str = "0", *key_args: str) -> str:
        self.cli("accounts", "create", email, "--grant", grant)
        out = self.cli("keys", "create", email, *key_args)
        match = re.search(r"(td-[A-Za-z0-9]+)", out)
        assert match, out
        return match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    log_dir: Path,
    env: Mapping[str, str | None] | None = None,
    *,
    backend: str = "sqlite",
    database_url: str | None = None,
    port: int | None = None,
    timeout: float = 120,
) -> Server:
    port = port or free_port()
    database_url = database_url or new_database(backend, log_dir)
    log_path = log_dir / f"server-{port}-{secrets.token_hex(3)}.log"
    asked: dict[str, str | None] = {"TOKENDOCK_DATABASE_URL": database_url, **(env or {})}
    # Tests drive more traffic than the safe default tier allows; a test of that default
    # passes TOKENDOCK_RATE_TIERS=None (then the built-in default applies).
    base = {"TOKENDOCK_DATA_DIR": str(DATA_DIR), "TOKENDOCK_RATE_TIERS": UNLIMITED_TIERS}
    dropped = {k for k, v in asked.items() if v is None}
    extra = {k: v for k, v in asked.items() if v is not None}
    full_env = {k: v for k, v in {**os.environ, **base, **extra}.items() if k not in dropped}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokendock", "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, database_url, port, extra)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=1).status_code == 200:
                match = re.search(r"Your API key \(shown once\): (td-[A-Za-z0-9]+)", server.log())
                server.key = match.group(1) if match else ""
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")
