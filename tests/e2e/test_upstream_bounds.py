"""Upstream models are admitted like embedded ones (issue 9, findings 5 and 6): each prompt of a
multi-prompt request is bounded by its own context window, usage an upstream reports above the
hold is charged (up to the balance), and a body that is not strict JSON is a 400 before
admission, so nothing leaks."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import BACKENDS, Server, start_server
from tests.e2e.upstreams import Upstream, model_entry, start_fault

BIG_PROMPT = 200_000  # what the fault upstream's "bigusage" mode reports


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault-bounds"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, fault: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"gateway-bounds-{request.param}")
    catalog = workdir / "models.toml"
    catalog.write_text(
        model_entry("up-ok", [{"name": "ok", "base_url": fault.v1, "model": "ok"}])
        + model_entry("up-big", [{"name": "big", "base_url": fault.v1, "model": "bigusage"}])
    )
    srv = start_server(workdir, {"TOKENDOCK_MODELS_FILE": str(catalog)}, backend=request.param)
    yield srv
    srv.stop()


def test_nan_and_infinity_are_400_before_admission(gateway: Server) -> None:
    """A concurrency limit of 1: a leaked slot would turn the next request into a 429."""
    email = f"nan-{gateway.port}@example.com"
    key = gateway.new_key(email, "1")
    gateway.cli("limits", "set", "--account", email, "--concurrent", "1")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for junk in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"model": "up-ok", "messages": [{"role": "user", "content": "hi"}], "x": ' + junk
        resp = httpx.post(gateway.v1 + "/chat/completions", content=body + b"}", headers=auth)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert resp.headers["x-request-id"]
    body = {"model": "up-ok", "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(gateway.v1 + "/chat/completions", json=body, headers=auth)
    assert resp.status_code == 200, resp.text


def test_each_prompt_is_held_within_its_own_window(gateway: Server) -> None:
    """50 long prompts: the hold covers 50 windows, not one for all of them."""
    auth = {"Authorization": f"Bearer {gateway.key}"}
    prompt = "word " * 3000  # 15,000 bytes: bounded by the 2,048-token window
    body = {"model": "up-ok", "prompt": [prompt] * 50, "max_tokens": 1, "stream": True}
    with httpx.stream("POST", gateway.v1 + "/completions", json=body, headers=auth) as resp:
        assert resp.status_code == 200
        hold = resp.headers["x-tokendock-hold"]
        resp.read()
    # 50 × 2,048 prompt tokens at 2.5 µc and 50 × 1 completion token at 10 µc.
    assert round(float(hold) * 1_000_000) == 50 * 2048 * 2.5 + 50 * 10


def test_usage_above_the_hold_is_charged(gateway: Server) -> None:
    key = gateway.new_key(f"big-{gateway.port}@example.com", "5")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "up-big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    resp = httpx.post(gateway.v1 + "/chat/completions", json=body, headers=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    rows = httpx.get(gateway.v1 + "/usage", headers=auth, timeout=10).json()["data"]
    row = next(r for r in rows if r["request_id"] == resp.headers["x-request-id"])
    assert row["prompt_tokens"] == BIG_PROMPT
    charged = round(float(resp.headers["x-tokendock-cost"]) * 1_000_000)
    assert charged == math.ceil(BIG_PROMPT * 2.5 + 6 * 10)
    # A balance too small for the excess pays what it has, never goes below zero.
    poor = gateway.new_key(f"poor-{gateway.port}@example.com", "0.01")
    auth = {"Authorization": f"Bearer {poor}"}
    resp = httpx.post(gateway.v1 + "/chat/completions", json=body, headers=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    assert float(resp.headers["x-tokendock-credit-remaining"]) == 0.0
    assert round(float(resp.headers["x-tokendock-cost"]) * 1_000_000) == 10_000
