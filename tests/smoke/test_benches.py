"""Every `make bench-*` target runs, in its `--smoke` mode: one short repetition, no targets
judged, in seconds, and nothing written into docs/ (each bench's temporary files land in this
test's temporary directory through TMPDIR)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.smoke.readme import ROOT, bench_targets

DOCS_THE_BENCHES_WRITE = ["benchmarks.md", "reliability.md", "gateway-bench.png"]
BENCHES = bench_targets()


def docs_digest() -> dict[str, str]:
    out = {}
    for name in DOCS_THE_BENCHES_WRITE:
        path = ROOT / "docs" / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"
    return out


@pytest.mark.parametrize("target", BENCHES)
def test_bench_smoke(target: str, tmp_path: Path) -> None:
    before = docs_digest()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENDOCK_")},
        "TMPDIR": str(tmp_path),
    }
    for name in ("TOKENDOCK_TEST_POSTGRES_URL", "TOKENDOCK_TEST_REDIS_URL"):
        if name in os.environ:
            env[name] = os.environ[name]
    res = subprocess.run(
        ["make", "-o", ".venv/.installed-stamp", target, "BENCH_ARGS=--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    output = res.stdout[-6000:] + res.stderr[-4000:]
    assert res.returncode == 0, output
    assert "smoke" in res.stdout, output  # it ran in --smoke mode
    assert docs_digest() == before, "a --smoke run wrote into docs/"
