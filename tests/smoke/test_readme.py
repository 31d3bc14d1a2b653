"""The Quickstart as a new user follows it: `make serve`, the key it prints, then the README's
curl and OpenAI SDK examples exactly as written (only the base URL and the key substituted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.smoke.conftest import Served
from tests.smoke.readme import ROOT, curl_example, lost_key_command, python_example

MODEL = "gemma-3-270m"
EMBEDDING_MODEL = "all-minilm-l6-v2"


def test_make_serve_prints_a_key_that_works(make_serve: Served) -> None:
    log = make_serve.log.read_text(errors="replace")
    assert "First start: created admin account admin@localhost" in log, log
    assert f"serving {MODEL}, {EMBEDDING_MODEL} at {make_serve.base_url}/v1" in log, log
    resp = httpx.post(
        make_serve.base_url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {make_serve.key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["x-tokendock-cost"].replace(".", "")) > 0
    assert resp.json()["usage"]["completion_tokens"] >= 1


def test_lost_key_command(make_serve: Served) -> None:
    """The README's "Lost it?" (`.venv/bin/tokendock keys create admin@localhost`)."""
    argv = lost_key_command()
    assert argv[0] == ".venv/bin/tokendock", argv
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=make_serve.env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    key = res.stdout.split(": ", 1)[1].split()[0]
    resp = httpx.get(
        make_serve.base_url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert resp.status_code == 200, resp.text


def test_readme_curl_example(make_serve: Served) -> None:
    assert shutil.which("curl"), "the README's curl example needs curl"
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", curl_example(make_serve.base_url)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENDOCK_API_KEY": make_serve.key},
        timeout=180,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    head, _, body = res.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200"), res.stdout
    assert "x-tokendock-cost:" in head.lower(), head
    assert '"chat.completion"' in body, body


def test_readme_python_sdk_example(make_serve: Served, tmp_path: Path) -> None:
    script = tmp_path / "readme_sdk.py"
    script.write_text(python_example(make_serve.base_url))
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENDOCK_API_KEY": make_serve.key},
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("CompletionUsage(") == 2, res.stdout  # the plain and the streamed one
