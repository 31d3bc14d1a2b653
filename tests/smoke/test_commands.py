"""Every `tokendock` admin command the README shows, and every `make` target, still works.

The admin commands are read from the README's block (tests/smoke/readme.py), optional parts
included, and run in order against a fresh database (SQLite in a temporary data directory, and
a new PostgreSQL database when TOKENDOCK_TEST_POSTGRES_URL is set): through `tokendock.cli.main`
in this process (one import for the whole sequence), then `ledger verify` once more through the
installed `tokendock` console script, as a user types it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import BACKENDS, new_database
from tests.smoke.readme import ROOT, Block, admin_commands, bench_targets, blocks
from tokendock.cli import main as tokendock

TOKENDOCK_BIN = Path(sys.executable).with_name("tokendock")
STAMP = ".venv/.installed-stamp"
MAKE_TARGETS = [
    "serve",
    "test",
    "test-fast",
    "check",
    "fmt",
    "lint",
    "types",
    "contracts",
    "duplicates",
]
BENCH_TARGETS = bench_targets()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = tokendock(argv)
    out = capsys.readouterr()
    assert code == 0, f"tokendock {' '.join(argv)} → exit {code}\n{out.out}\n{out.err}"
    return out.out


def models_dir_link(data: Path) -> None:
    """A fresh data directory reuses the assembled model (`make test` fetched it)."""
    data.mkdir()
    (data / "models").symlink_to(ROOT / "data" / "models", target_is_directory=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_readme_admin_commands(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    models_dir_link(data)
    env = {"TOKENDOCK_DATA_DIR": str(data)}
    if backend == "sqlite":
        monkeypatch.delenv("TOKENDOCK_DATABASE_URL", raising=False)
    else:
        env["TOKENDOCK_DATABASE_URL"] = new_database(backend, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TOKENDOCK_MODELS_FILE", raising=False)

    commands = admin_commands()
    verbs = [" ".join(a for a in argv[:2] if not a.startswith("-")) for argv in commands]
    assert verbs[0] == "migrate", verbs  # the README's order: the schema first
    for expected in ("accounts create", "keys create", "keys revoke", "credits grant"):
        assert expected in verbs, f"the README's admin block lost `tokendock {expected}`"
    key_id = ""
    for argv in commands:
        if argv[:2] == ["keys", "revoke"]:
            argv = [*argv[:-1], key_id]  # the README's example id → the key made above
        if argv[:2] == ["limits", "set"] and "--key" in argv:
            argv[argv.index("--key") + 1] = key_id
        out = run(argv, capsys)
        if argv[:2] == ["keys", "create"]:
            match = re.search(r"key (\d+): td-[A-Za-z0-9]+", out)
            assert match, out
            key_id = match.group(1)
        if argv[:2] == ["keys", "list"]:
            assert "active" in out, out
        if argv[:2] == ["codes", "create"]:
            count = int(argv[argv.index("--count") + 1]) if "--count" in argv else 1
            assert len(re.findall(r"tdc-\S+", out)) == count, out
        if argv[:2] == ["ledger", "verify"]:
            assert "ledger OK" in out, out

    grant = next(a for a in commands if a[:2] == ["credits", "grant"])
    assert "already applied" in run(grant, capsys)  # idempotent per reference
    assert "gemma-3-270m" in run(["models", "list"], capsys)
    assert "gemma-3-270m" in run(["models", "fetch"], capsys)

    res = subprocess.run(
        [str(TOKENDOCK_BIN), "ledger", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and "ledger OK" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize(
    "block", [b for b in blocks() if b.lang == "toml"], ids=lambda b: b.heading.split(" (")[0]
)
def test_readme_catalogs_load(
    block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every catalog the README shows loads (`tokendock serve --models FILE` reads it the same
    way; serving needs the GGUF files and servers the examples name)."""
    catalog = tmp_path / "models.toml"
    catalog.write_text(block.code)
    listed = run(["models", "list", "--models", str(catalog)], capsys)
    for model in re.findall(r'^\[models\."([^"]+)"\]', block.code, re.M):
        assert model in listed, listed


@pytest.mark.parametrize("target", MAKE_TARGETS + BENCH_TARGETS)
def test_make_targets_parse(target: str) -> None:
    """`make -n` parses the Makefile and prints the recipe without running it."""
    res = subprocess.run(
        ["make", "-n", "-o", STAMP, target],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert ".venv/bin/" in res.stdout, res.stdout
