"""Upstream processes for the gateway tests: the fault-injecting upstream, llama.cpp's own
OpenAI server, and catalogs that put them behind a TokenDock gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import ROOT, Server, free_port

# Gateway prices: every token shows in the bill (2.5 µc per prompt token, 10 per completion).
PRICE = '[models."{id}".price]\ninput = "2.5"\noutput = "10"\n'
UPSTREAM_KEY = "sk-upstream-secret-do-not-leak-0123456789"


def usage_row(gateway: Server, request_id: str) -> dict[str, Any]:
    """The gateway's usage record of one request (GET /v1/usage with its bootstrap key)."""
    rows = httpx.get(
        gateway.v1 + "/usage", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()["data"]
    matches = [r for r in rows if r["request_id"] == request_id]
    assert matches, rows[:3]
    row: dict[str, Any] = matches[0]
    return row


def cost(prompt_tokens: int, completion_tokens: int) -> int:
    return -(-(prompt_tokens * 2_500_000 + completion_tokens * 10_000_000) // 1_000_000)


@dataclass
class Upstream:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = httpx.get(f"http://127.0.0.1:{self.port}/stats").json()
        return result

    def override(self, mode: str | None) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/control", json={"override": mode})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_process(args: list[str], log_dir: Path, port: int, timeout: float = 120) -> Upstream:
    log_path = log_dir / f"upstream-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    upstream = Upstream(port, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"upstream exited:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(upstream.v1 + "/models", timeout=1).status_code < 500:
                return upstream
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    upstream.stop()
    raise RuntimeError(f"upstream not up after {timeout}s:\n{log_path.read_text()}")


def start_fault(log_dir: Path, *, delay: float = 0.0) -> Upstream:
    port = free_port()
    args = [sys.executable, "-m", "tests.e2e.fault_upstream", str(port), "--delay", str(delay)]
    return start_process(args, log_dir, port, timeout=30)


def model_entry(model_id: str, deployments: list[dict[str, Any]], context: int = 2048) -> str:
    """One catalog entry served by `deployments` (dicts of DeploymentSpec fields)."""
    lines = [
        f'[models."{model_id}"]',
        'engine = "upstream"',
        f"context_length = {context}",
        PRICE.format(id=model_id),
    ]
    for d in deployments:
        lines.append(f'[[models."{model_id}".deployments]]')
        for k, v in d.items():
            lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"
