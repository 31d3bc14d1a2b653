"""How many prompt tokens a step evaluates, by who else is decoding (scheduler.prefill_budget)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tokendock.inference.engine.sequence import (
    PREFILL_CHUNK,
    PREFILL_SHARED,
    prefill_budget,
)


def seq(owner: str, *, decoding: bool) -> Any:
    return SimpleNamespace(
        job=SimpleNamespace(gen=SimpleNamespace(owner=owner)), next=1 if decoding else None
    )


def test_alone_a_prompt_gets_efficient_chunks() -> None:
    prompt = seq("account:1", decoding=False)
    assert prefill_budget([prompt], [prompt]) == PREFILL_CHUNK


def test_beside_its_own_streams_larger_chunks() -> None:
    prompt, stream = seq("account:1", decoding=False), seq("account:1", decoding=True)
    assert prefill_budget([stream, prompt], [prompt]) == PREFILL_CHUNK


def test_beside_another_accounts_stream_small_chunks() -> None:
    prompt, stream = seq("account:1", decoding=False), seq("account:2", decoding=True)
    assert prefill_budget([stream, prompt], [prompt]) == PREFILL_SHARED
    mine = seq("account:2", decoding=False)  # the streaming account's own prompt beside it
    assert prefill_budget([stream, prompt, mine], [mine, prompt]) == PREFILL_SHARED
    assert PREFILL_SHARED < PREFILL_CHUNK
