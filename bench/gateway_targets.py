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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.gateway_load import body
from bench.harness import TokenDock
from bench.harness import start_tokendock as start_tokendock_server
from bench.procs import HOST, ROOT, Proc, first_json_line, free_port, http_json, start, wait_http

LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
UPSTREAM_MODEL = "mock-model"
SCENARIOS = ("fast", "slow", "stream")
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
    server: TokenDock | None = None  # TokenDock's process, data directory and CLI

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


def start_mocks(tmp: Path, slow_ms: float, python: str, stream_chunks: int = 100) -> Mocks:
    flags = {
        "fast": ["--delay-ms", "0", "--chunks", "16"],
        "slow": ["--delay-ms", f"{slow_ms:g}", "--chunks", "16"],
        "stream": ["--delay-ms", "0", "--chunks", str(stream_chunks), "--interval-ms", "50-100"],
    }
    procs, ports = {}, {}
    for name, extra in flags.items():
        cmd = [
            python,
            "-m",
            "bench.mock_upstream",
            "--port",
            "0",
            "--models",
            UPSTREAM_MODEL,
            *extra,
        ]
        procs[name] = start(f"mock-{name}", cmd, tmp / f"mock-{name}.log")
    for name, proc in procs.items():
        ports[name] = int(first_json_line(proc, 20)["port"])
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
    catalog = tmp / "tokendock-models.toml"
    catalog.write_text(tokendock_catalog(mocks))
    # rate limits are evaluated on every request, with limits never reached (UNLIMITED_TIERS)
    env = {"TOKENDOCK_BOOTSTRAP_GRANT": GRANT_CREDITS}
    td = start_tokendock_server(tmp, env, catalog=catalog, python=python)
    try:
        version = importlib.metadata.version("tokendock")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    target = Target(
        "tokendock",
        f"TokenDock {version}",
        {s: (td.port, f"mock-{s}") for s in SCENARIOS},
        {"Authorization": f"Bearer {td.key}"},
        td.proc,
        server=td,
    )
    target.notes.append(f"data dir {td.data_dir} (SQLite), catalog {catalog.name}")
    return target


def tokendock_integrity(td: TokenDock) -> dict[str, object]:
    """After TokenDock stopped: usage records by status, and `tokendock ledger verify`."""
    usage = td.usage_by_status()
    exit_code, lines = td.ledger_verify()
    return {
        "usage_records": usage,
        "usage_total": sum(usage.values()),
        "ledger_verify_exit": exit_code,
        "ledger_verify": lines,
    }


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


def check_target(target: Target) -> list[str]:
    """One plain and one streamed request; the problems found (empty: fine)."""
    problems = []
    model = target.endpoints["fast"][1]
    status, headers, raw = http_json(target.url("fast"), body(model), target.headers)
    if status != 200:
        return [f"plain request: HTTP {status}: {raw[:300]!r}"]
    doc = json.loads(raw)
    usage = doc.get("usage") or {}
    if usage.get("completion_tokens") != 16:
        problems.append(f"plain request: usage {usage}")
    status, _, raw = http_json(target.url("fast"), body(model, stream=True), target.headers)
    if status != 200 or b"[DONE]" not in raw or b'"completion_tokens"' not in raw:
        problems.append(f"streamed request: HTTP {status}, no [DONE] or no usage: {raw[-300:]!r}")
    if target.name == "tokendock" and "x-tokendock-cost" not in {k.lower() for k in headers}:
        problems.append("no x-tokendock-cost header: is billing on?")
    return problems
