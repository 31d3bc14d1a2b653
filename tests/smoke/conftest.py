"""`make serve` itself, started the way a user starts it, for the README examples to call.

The Makefile passes the environment through, so TOKENDOCK_PORT / TOKENDOCK_DATA_DIR point it at
a free port and a fresh data directory (its `models` linked to the assembled model in data/).
`-o .venv/.installed-stamp` keeps make from reinstalling .venv (`make test` just set it up).
make and the server run in a process group of their own, stopped by its id at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.smoke.readme import ROOT

KEY_LINE = re.compile(r"Your API key \(shown once\): (td-[A-Za-z0-9]+)")
READY_TIMEOUT = 180.0


@dataclass
class Served:
    base_url: str
    key: str
    log: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]  # the environment it runs with (its data directory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group this test started (make and the server), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def make_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("make-serve")
    data = tmp / "data"
    data.mkdir()
    (data / "models").symlink_to(ROOT / "data" / "models", target_is_directory=True)
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TOKENDOCK_DATABASE_URL", "TOKENDOCK_MODELS_FILE", "TOKENDOCK_RATE_TIERS")
    }
    env.update(TOKENDOCK_PORT=str(port), TOKENDOCK_DATA_DIR=str(data), TOKENDOCK_HOST="127.0.0.1")
    log = tmp / "make-serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "-o", ".venv/.installed-stamp", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            text = log.read_text(errors="replace")
            assert process.poll() is None, f"make serve exited {process.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"make serve not ready:\n{text}"
            try:
                if httpx.get(base_url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        match = KEY_LINE.search(log.read_text(errors="replace"))
        assert match, f"make serve printed no API key:\n{log.read_text(errors='replace')}"
        yield Served(base_url, match.group(1), log, process, env)
    finally:
        stop_group(process)
