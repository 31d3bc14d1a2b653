"""Spill-over (inference/spill.py): the catalog's rules for it, and the per-request decision with a
fake engine load and real routers over deployments that are never called."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tokendock.catalog import Catalog, CatalogError, DeploymentSpec, ModelSpec
from tokendock.errors import UnsupportedParameter
from tokendock.inference.backend import Features, InferenceRequest, Passthrough
from tokendock.inference.engine.embedded import EmbeddedBackend, EmbeddedRun
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.spill import SpillBackend, embedded_of
from tokendock.inference.upstream.backend import UpstreamBackend, UpstreamRun
from tokendock.inference.upstream.client import Deployment
from tokendock.inference.upstream.router import RetryPolicy, Router
from tokendock.inference.upstream.transport import UpstreamTransport
from tokendock.inference.vocabulary import ChatTurn

DEPLOYMENT = '[[models."m".deployments]]\nname = "big"\nbase_url = "http://h/v1"\n'


def catalog(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text('[models."m"]\n' + body)
    return path


def test_a_llama_model_with_deployments_and_spill_after(tmp_path: Path) -> None:
    spec = Catalog.load(catalog(tmp_path, 'package = "p"\nspill_after = 0.5\n' + DEPLOYMENT)).get(
        "m"
    )
    assert spec is not None and spec.engine == "llama.cpp" and spec.spill_after == 0.5
    assert [d.name for d in spec.deployments] == ["big"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('package = "p"\n' + DEPLOYMENT, "or 'spill_after'"),
        ('package = "p"\nspill_after = 1\n', "'spill_after' needs \\[\\[deployments\\]\\]"),
        ('engine = "upstream"\nspill_after = 1\n' + DEPLOYMENT, "for a llama.cpp model"),
        ('package = "p"\nspill_after = -1\n' + DEPLOYMENT, "greater than or equal to 0"),
        ('package = "p"\ntask = "embedding"\nspill_after = 0\n' + DEPLOYMENT, "generation"),
        ('package = "p"\nspill_after = 0\n' + DEPLOYMENT + DEPLOYMENT, "unique"),
    ],
)
def test_bad_spill_entries_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.load(catalog(tmp_path, body))


class FakeEngine:
    """The parts of the engine that `bound` and the spill rule read."""

    model_id = "m"
    context_length = 2048
    vocab_size = 1000
    max_token_bytes = 48

    def __init__(self) -> None:
        self.ready = True
        self.saturated = False
        self.wait = 0.0

    def estimated_wait(self) -> float:
        return self.wait


def spill(after: float, *deployments: Deployment) -> tuple[SpillBackend, FakeEngine]:
    spec = ModelSpec(
        id="m",
        package="p",
        spill_after=after,
        deployments=[d.spec for d in deployments] or [DeploymentSpec(base_url="http://h/v1")],
    )
    engine = FakeEngine()
    router = Router("m", deployments, RetryPolicy(), UpstreamTransport(object()))  # type: ignore[arg-type]
    local = EmbeddedBackend(engine, spec)  # type: ignore[arg-type]
    return SpillBackend(local, UpstreamBackend(router, spec), engine), engine


def deployment(name: str = "big", **spec: Any) -> Deployment:
    return Deployment(DeploymentSpec(name=name, base_url="http://127.0.0.1:1/v1", **spec))


def request(**fields: Any) -> InferenceRequest:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    turns = (ChatTurn("user", "hi"),)
    return InferenceRequest(
        "chat", "m", turns, prompt_bytes=(12,), payload=Passthrough(body), **fields
    )


def where(backend: SpillBackend) -> str:
    run = backend.run(request(), owner="account:1", request_id="req_1")
    assert isinstance(run, EmbeddedRun | UpstreamRun)
    return "local" if isinstance(run, EmbeddedRun) else "upstream"


def test_spill_after_zero_spills_when_no_slot_is_free() -> None:
    backend, engine = spill(0, deployment())
    assert where(backend) == "local"
    engine.saturated = True  # even with no estimate yet
    assert where(backend) == "upstream"
    engine.saturated, engine.wait = False, 0.0
    assert where(backend) == "local"
    assert backend.spilled == 1


def test_a_wait_over_spill_after_spills_one_under_it_does_not() -> None:
    backend, engine = spill(2.0, deployment())
    engine.saturated = True
    engine.wait = 2.0
    assert where(backend) == "local"  # waits at most spill_after: stays
    engine.wait = 2.5
    assert where(backend) == "upstream"


def test_no_spill_without_a_deployment_that_can_take_it() -> None:
    down, full = deployment("down"), deployment("full", max_concurrency=1)
    backend, engine = spill(0, down, full)
    engine.saturated, engine.wait = True, 9.0
    down.health.cooldown_until = time.monotonic() + 60
    full.health.outstanding = 1
    assert where(backend) == "local"  # queue on the engine rather than on a full upstream
    full.health.outstanding = 0
    assert where(backend) == "upstream"


def test_an_engine_still_loading_is_not_spilled_from() -> None:
    backend, engine = spill(0, deployment())
    engine.ready, engine.saturated, engine.wait = False, True, 9.0
    assert where(backend) == "local" and not backend.ready


def test_spills_are_told_to_the_metric_hook() -> None:
    backend, engine = spill(0, deployment())
    told: list[str] = []
    backend.on_spill = told.append
    engine.saturated = True
    where(backend)
    where(backend)
    assert told == ["m", "m"]


def test_bound_refuses_what_the_engine_cannot_do_even_when_it_would_spill() -> None:
    backend, engine = spill(0, deployment())
    engine.saturated = True
    with pytest.raises(UnsupportedParameter) as refused:
        backend.bound(request(features=Features(suffix=True)))
    assert refused.value.param == "suffix"


def test_bound_holds_for_the_larger_worst_case() -> None:
    backend, _ = spill(0, deployment())
    req = request(max_tokens=10)
    local, remote = backend.embedded.bound(req), backend.upstream.bound(req)
    assert remote.prompt_tokens > local.prompt_tokens  # the whole body counts upstream
    assert backend.bound(req).prompt_tokens == remote.prompt_tokens
    assert backend.bound(req).completion_tokens == 10


def test_registry_builds_the_router_and_lists_the_engine(tmp_path: Path) -> None:
    path = catalog(tmp_path, 'package = "p"\nspill_after = 0\n' + DEPLOYMENT)
    registry = ModelRegistry.from_catalog(Catalog.load(path), tmp_path)
    backend = registry.backend("m")
    assert isinstance(backend, SpillBackend)
    router = registry.router("m")
    assert router is not None and router is backend.router
    assert [d.name for d in router.deployments] == ["big"]
    assert list(registry.engines()) == [backend.embedded.engine]


def test_token_counting_reaches_the_engine_behind_a_spill_model() -> None:
    backend, _ = spill(0, deployment())
    assert embedded_of(backend) is backend.embedded
    assert embedded_of(backend.embedded) is backend.embedded
    assert embedded_of(backend.upstream) is None


def test_a_prompt_certain_to_overflow_the_window_is_refused_unread() -> None:
    """Bytes / the longest token's bytes is a floor on tokens: twice the window's worth of
    that many bytes is a 400 in `bound`, before admission and the tokenizer."""
    from tokendock.errors import ContextLengthExceeded
    from tokendock.inference.engine.embedded import check_prompt_bytes

    req = InferenceRequest(kind="chat", model="m", prompt_bytes=(2 * 2048 * 48 + 1,))
    with pytest.raises(ContextLengthExceeded) as refused:
        check_prompt_bytes(req, 2048, 48)
    assert refused.value.param == "messages"
    check_prompt_bytes(
        InferenceRequest(kind="chat", model="m", prompt_bytes=(2 * 2048 * 48,)), 2048, 48
    )
    text = InferenceRequest(kind="text", model="m", prompt_bytes=(10, 10**7))
    with pytest.raises(ContextLengthExceeded) as refused:
        check_prompt_bytes(text, 2048, 48)
    assert refused.value.param == "prompt"
    check_prompt_bytes(text, 2048, 0)  # not loaded yet: nothing is known, nothing refused
