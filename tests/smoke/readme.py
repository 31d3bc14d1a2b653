"""The README's code blocks, found by what they are, so that a README edit that breaks one
fails the smoke tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench_targets() -> list[str]:
    """Every `make bench-*` target, as the Makefile declares them (.PHONY)."""
    makefile = (ROOT / "Makefile").read_text()
    return sorted(set(re.findall(r"^(bench-[\w-]+):", makefile, flags=re.MULTILINE)))


README = ROOT / "README.md"
README_BASE_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    heading: str  # the nearest heading above the block
    code: str


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    out: list[Block] = []
    heading, done = "", 0
    for match in FENCE.finditer(text):
        # headings between the previous block and this one (a `# comment` in code is none)
        found = re.findall(r"^#+ (.+)$", text[done : match.start()], re.M)
        heading = found[-1] if found else heading
        out.append(Block(match.group(1), heading, match.group(2)))
        done = match.end()
    return out


def one(lang: str, heading: str, needle: str) -> Block:
    found = [b for b in blocks() if b.lang == lang and b.heading == heading and needle in b.code]
    assert len(found) == 1, f"README: expected one {lang} block with {needle!r} under {heading!r}"
    return found[0]


def curl_example(base_url: str) -> str:
    """The curl block as a bash script for `base_url`; the key comes from the environment."""
    code = one("bash", "curl", "curl ").code
    assert "export TOKENDOCK_API_KEY=" in code, "the curl example no longer sets the key"
    lines = [ln for ln in code.splitlines() if not ln.startswith("export TOKENDOCK_API_KEY=")]
    return "\n".join(lines).replace(README_BASE_URL, base_url) + "\n"


def python_example(base_url: str) -> str:
    """The OpenAI SDK block for `base_url` (it reads TOKENDOCK_API_KEY itself)."""
    code = one("python", "OpenAI Python SDK", "OpenAI(").code
    assert README_BASE_URL + "/v1" in code, "the SDK example no longer names the base URL"
    return code.replace(README_BASE_URL, base_url)


def admin_commands() -> list[list[str]]:
    """The admin block's `tokendock …` commands as argv lists (without `tokendock`), with the
    optional `[…]` parts included and `…` placeholders filled in."""
    code = one("bash", "Accounts, keys and credits", "tokendock ledger verify").code
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[([^\]]*)\]", r"\1", line)  # optional parts: included
        line = line.replace("…", "correct-horse-battery-staple")  # the one placeholder: a password
        argv = shlex.split(line)
        assert argv[0] == "tokendock", line
        commands.append(argv[1:])
    return commands


def lost_key_command() -> list[str]:
    """The Quickstart's "Lost it? `…`" command, as argv."""
    match = re.search(r"Lost it\? `([^`]+)`", README.read_text())
    assert match, "the README no longer says how to make another key"
    return shlex.split(match.group(1))
