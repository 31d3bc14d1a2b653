"""What bench/gateway.py measures: the mock upstreams, and the gateways in front of them.

Three mocks (bench/mock_upstream.py), one process each:

* `fast`   — answers at once; 16 tokens (non-streaming, and streams in one write).
* `slow`   — answers after 20 ms (`--slow-ms`); 16 tokens.
* `stream` — streams of 100 tokens, one chunk every 50-100 ms (~7.5 s per stream).

Each gateway serves the three as models `mock-fast`, `mock-slow`, `mock-stream` (upstream model
`mock-model`) from ONE process (one worker each): TokenDock from a temporary data directory
(SQLite, rate limits evaluated with huge limits, billing and usage records on), LiteLLM's proxy
from its own virtualenv with the production settings of its docs. "direct" talks to the mocks.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway_procs import HOST, ROOT, Proc, first_json_line, free_port, http_json, start, wait_http

MOCK = Path(__file__).with_name("mock_upstream.py")
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
UPSTREAM_MODEL = "mock-model"
SCENARIOS = ("fast", "slow", "stream")
RATE_TIERS = {"default": {"rpm": 100_000_000, "tpm": 1_000_000_000, "concurrent": 100_000}}
GRANT_CREDITS = "1000000"  # a few µ-credits per request: never the limit
LITELLM_MASTER_KEY = "sk-gateway-bench-master-key"


@dataclass
class Target:
    name: str  # direct | tokendock | litellm
    label: str
    endpoints: dict[str, tuple[int, str]]  # scenario → (port, model)
    headers: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None  # the gateway (None for direct)
    path: str = "/v1/chat/completions"
    notes: list[str] = field(default_factory=list)

    def url(self, scenario: str) -> str:
        return f"http://{HOST}:{self.endpoints[scenario][0]}{self.path}"


@dataclass
class Mocks:
    procs: dict[str, Proc]
    ports: dict[str, int]

    def stats(self, scenario: str, reset: bool = False) -> dict[str, int]:
        """The mock's counters (`reset`: its peaks restart from now)."""
        url = f"http://{HOST}:{self.ports[scenario]}/stats" + ("?reset=1" if reset else "")
        status, _, body = http_json(url, timeout=5)
        if status != 200:
            raise RuntimeError(f"mock {scenario}: /stats answered {status}")
        return dict(json.loads(body))


def start_mocks(tmp: Path, slow_ms: float, python: str) -> Mocks:
    flags = {
        "fast": ["--delay-ms", "0", "--chunks", "16"],
        "slow": ["--delay-ms", f"{slow_ms:g}", "--chunks", "16"],
        "stream": ["--delay-ms", "0", "--chunks", "100", "--interval-ms", "50-100"],
    }
    procs, ports = {}, {}
    for name, extra in flags.items():
        cmd = [python, str(MOCK), "--port", "0", "--models", UPSTREAM_MODEL, *extra]
        procs[name] = start(f"mock-{name}", cmd, tmp / f"mock-{name}.log")
    for name, proc in procs.items():
        ports[name] = int(first_json_line(proc, 20)["port"])  # type: ignore[call-overload]
        wait_http(f"http://{HOST}:{ports[name]}/health", proc, 20)
    return Mocks(procs, ports)


def direct(mocks: Mocks) -> Target:
    return Target(
        "direct",
        "direct (mock)",
        {s: (mocks.ports[s], UPSTREAM_MODEL) for s in SCENARIOS},
        {"Authorization": "Bearer not-checked"},
    )


# -- TokenDock ------------------------------------------------------------------------------


def tokendock_catalog(mocks: Mocks) -> str:
    parts = []
    for s in SCENARIOS:
        parts.append(
            f'[models."mock-{s}"]\nengine = "upstream"\ncontext_length = 8192\n'
            f'[models."mock-{s}".price]\ninput = "0.10"\noutput = "0.20"\n'
            f'[[models."mock-{s}".deployments]]\nname = "mock-{s}"\n'
            f'base_url = "http://{HOST}:{mocks.ports[s]}/v1"\nmodel = "{UPSTREAM_MODEL}"\n'
        )
    return "\n".join(parts)


def start_tokendock(tmp: Path, mocks: Mocks, python: str) -> Target:
    data = tmp / "tokendock-data"
    data.mkdir()
    catalog = tmp / "tokendock-models.toml"
    catalog.write_text(tokendock_catalog(mocks))
    port = free_port()
    env = {
        "TOKENDOCK_DATA_DIR": str(data),
        "TOKENDOCK_MODELS_FILE": str(catalog),
        "TOKENDOCK_HOST": HOST,
        "TOKENDOCK_RATE_TIERS": json.dumps(RATE_TIERS),
        "TOKENDOCK_BOOTSTRAP_GRANT": GRANT_CREDITS,
        "TOKENDOCK_LOG_LEVEL": "warning",
        "TOKENDOCK_WORKERS": "1",
    }
    cmd = [python, "-m", "tokendock", "serve", "--port", str(port)]
    proc = start("tokendock", cmd, tmp / "tokendock.log", env)
    wait_http(f"http://{HOST}:{port}/ready", proc, 120)
    match = re.search(r"Your API key \(shown once\): (td-\S+)", proc.log.read_text())
    if match is None:
        raise RuntimeError(f"tokendock printed no bootstrap key:\n{proc.tail()}")
    try:
        version = importlib.metadata.version("tokendock")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    target = Target(
        "tokendock",
        f"TokenDock {version}",
        {s: (port, f"mock-{s}") for s in SCENARIOS},
        {"Authorization": f"Bearer {match.group(1)}"},
        proc,
    )
    target.notes.append(f"data dir {data} (SQLite), catalog {catalog.name}")
    return target


def tokendock_integrity(tmp: Path, python: str) -> dict[str, object]:
    """After TokenDock stopped: usage records by status, and `tokendock ledger verify`."""
    import sqlite3

    data = tmp / "tokendock-data"
    out: dict[str, object] = {}
    db = data / "tokendock.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT status, coalesce(finish_reason, '-'), count(*) FROM usage_records "
                "GROUP BY 1, 2 ORDER BY 3 DESC"
            ).fetchall()
            out["usage_records"] = {f"{s}/{f}": n for s, f, n in rows}
            out["usage_total"] = sum(n for _, _, n in rows)
    env = {
        **os.environ,
        "TOKENDOCK_DATA_DIR": str(data),
        "TOKENDOCK_MODELS_FILE": str(tmp / "tokendock-models.toml"),
    }
    res = subprocess.run(
        [python, "-m", "tokendock", "ledger", "verify"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    out["ledger_verify_exit"] = res.returncode
    out["ledger_verify"] = (res.stdout + res.stderr).strip().splitlines()[-5:]
    return out


# -- LiteLLM --------------------------------------------------------------------------------


def litellm_version(venv: Path = LITELLM_VENV) -> str | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    res = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        res.stdout.strip() if res.returncode == 0 and (venv / "bin" / "litellm").exists() else None
    )


def ensure_litellm(venv: Path = LITELLM_VENV, install: bool = True) -> str:
    """LiteLLM's proxy in its own virtualenv (reused when present): `pip install
    'litellm[proxy]'` from PyPI. The venv holds a `.gitignore` of `*`, so git ignores it."""
    version = litellm_version(venv)
    if version:
        return version
    if not install:
        raise RuntimeError(f"LiteLLM is not installed in {venv} (and --no-install was given)")
    print(
        f"installing LiteLLM into {venv.relative_to(ROOT)} (pip install 'litellm[proxy]') …",
        flush=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=900)
    subprocess.run([*pip, "litellm[proxy]"], check=True, timeout=1800)
    version = litellm_version(venv)
    if not version:
        raise RuntimeError("LiteLLM installed but `import litellm` fails")
    return version


def litellm_config(mocks: Mocks) -> str:
    """As docs.litellm.ai/docs/proxy/prod recommends, minus what needs a database or Slack:
    a master key (auth), `set_verbose: False`, `json_logs: true`, `request_timeout: 600`."""
    models = "".join(
        f"  - model_name: mock-{s}\n"
        f"    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: http://{HOST}:{mocks.ports[s]}/v1\n"
        f"      api_key: fake-key\n"
        for s in SCENARIOS
    )
    return (
        f"model_list:\n{models}"
        f"general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n  request_timeout: 600\n  set_verbose: False\n  json_logs: true\n"
    )


def start_litellm(tmp: Path, mocks: Mocks, version: str, venv: Path = LITELLM_VENV) -> Target:
    config = tmp / "litellm-config.yaml"
    config.write_text(litellm_config(mocks))
    port = free_port()
    env = {
        "LITELLM_LOG": "ERROR",  # the docs: "Turn off FASTAPI's default info logs"
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network here: skip fetching the cost map
    }
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = start("litellm", cmd, tmp / "litellm.log", env, cwd=tmp)
    t0 = time.monotonic()
    wait_http(f"http://{HOST}:{port}/health/liveliness", proc, 240)
    target = Target(
        "litellm",
        f"LiteLLM {version}",
        {s: (port, f"mock-{s}") for s in SCENARIOS},
        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        proc,
    )
    target.notes.append(f"started in {time.monotonic() - t0:.0f} s; config {config.name}")
    return target
