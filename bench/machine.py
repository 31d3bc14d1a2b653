"""What a benchmark result says about where it ran: the CPU model and TokenDock's commit."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from pathlib import Path

from gateway_procs import ROOT


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
