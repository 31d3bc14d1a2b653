"""Completion budgets: the model's per-choice and per-request caps and its context window."""

from __future__ import annotations

import pytest

from tokendock.catalog import ModelSpec
from tokendock.errors import ContextLengthExceeded, InvalidRequest
from tokendock.inference.budget import check_request_cap, completion_budget, per_choice


def spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"id": "m", "path": "/m.gguf", "context_length": 4096, **fields}
    )


def test_the_cap_is_the_default_and_the_limit() -> None:
    capped = spec(max_output_tokens=512)
    assert per_choice(capped, None, "max_tokens") == 512
    assert per_choice(capped, 100, "max_tokens") == 100
    with pytest.raises(InvalidRequest) as err:
        per_choice(capped, 513, "max_completion_tokens")
    assert err.value.param == "max_completion_tokens"
    assert per_choice(spec(), None, "max_tokens") == 4096  # no cap: the window


def test_request_cap_counts_every_choice() -> None:
    capped = spec(max_output_tokens=512, max_request_output_tokens=4096)
    check_request_cap(capped, 512, 8, 8, "max_tokens")
    with pytest.raises(InvalidRequest) as err:
        check_request_cap(capped, 512, 9, 9, "max_tokens")
    assert err.value.param == "n"
    with pytest.raises(InvalidRequest) as err:
        check_request_cap(capped, 512, 9, 1, "max_tokens")  # 9 prompts, n = 1
    assert err.value.param == "max_tokens"
    assert spec(max_output_tokens=100).request_output_cap == 800


def test_budget_within_the_window() -> None:
    assert completion_budget(4096, 4000, None, 512, "messages") == 96
    assert completion_budget(4096, 10, None, 512, "messages") == 512
    assert completion_budget(4096, 10, 20, 512, "messages") == 20
    with pytest.raises(ContextLengthExceeded):
        completion_budget(4096, 4096, None, 512, "messages")
    with pytest.raises(ContextLengthExceeded):
        completion_budget(4096, 4090, 7, 512, "prompt")
