"""echo + logprobs with n choices through the SDK: the prompt is scored once per request, so
every choice echoes the very same prompt logprobs, and the prompt is billed once."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database


def test_n_choices_echo_the_same_prompt_logprobs(client: openai.OpenAI) -> None:
    prompt = " ".join(f"item{i}" for i in range(60))
    got = client.completions.create(
        model=MODEL,
        prompt=prompt,
        n=3,
        echo=True,
        logprobs=1,
        max_tokens=2,
        temperature=0,
        logit_bias={"1": -100, "106": -100},  # no <eos> / <end_of_turn>: two tokens each
    )
    assert len(got.choices) == 3
    echoed = []
    for choice in got.choices:
        assert choice.text.startswith(prompt) and choice.logprobs is not None
        lp = choice.logprobs
        assert lp.tokens is not None and lp.token_logprobs is not None
        cut = len(lp.tokens) - 2  # the prompt's tokens, then the two generated
        echoed.append((lp.tokens[:cut], lp.token_logprobs[:cut]))
    assert echoed[0] == echoed[1] == echoed[2]
    assert got.usage is not None and got.usage.completion_tokens == 6
    assert got.usage.prompt_tokens == len(echoed[0][0]) + 1  # once, with the BOS
