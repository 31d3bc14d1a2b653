"""Structural bounds of protocol/bounds.py: cheap counts, each refusal naming its field."""

from __future__ import annotations

import pytest

from tokendock.errors import InvalidRequest, TokenDockError
from tokendock.protocol.bounds import MAX_TEXT_CHARS, utf8_len
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.protocol.completions import CompletionRequest
from tokendock.protocol.errors import from_validation_error


def chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body, strict=True)


def param_of_validation(schema: type, body: dict[str, object]) -> str | None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        schema.model_validate(body, strict=True)  # type: ignore[attr-defined]
    error: TokenDockError = from_validation_error(err.value)
    return error.param


def test_utf8_len_counts_bytes_and_survives_lone_surrogates() -> None:
    assert utf8_len("abc") == 3
    assert utf8_len("ü€😀") == 2 + 3 + 4
    assert utf8_len("\ud800") == 3


def test_prompt_bound_covers_bytes_and_template() -> None:
    req = chat(messages=[{"role": "user", "content": "héllo"}] * 3)
    assert req.prompt_bound() == 16 + 3 * (16 + 6)


def test_counts_are_bounded() -> None:
    assert (
        param_of_validation(
            ChatCompletionRequest,
            {"model": "m", "messages": [{"role": "user", "content": ""}] * 2049},
        )
        == "messages"
    )
    many = CompletionRequest.model_validate({"model": "m", "prompt": ["a"] * 2049})
    with pytest.raises(InvalidRequest) as err:
        many.check()
    assert err.value.param == "prompt"
    assert (
        param_of_validation(
            ChatCompletionRequest,
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u" * 257},
        )
        == "user"
    )


def test_total_characters_are_bounded() -> None:
    req = chat(messages=[{"role": "user", "content": "x" * (MAX_TEXT_CHARS // 2 + 1)}] * 2)
    with pytest.raises(InvalidRequest) as err:
        req.check()
    assert err.value.param == "messages"


def test_choices_are_prompts_times_n() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["a"] * 100, "n": 2})
    with pytest.raises(InvalidRequest) as err:
        req.check()
    assert err.value.param == "n"
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["a", "bb"], "n": 2})
    req.check()
    assert req.prompt_bounds() == [17, 18]


@pytest.mark.parametrize(("prompt", "param"), [([[]], "prompt"), ([[1], []], "prompt[1]")])
def test_empty_token_id_prompts_are_refused(prompt: object, param: str) -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    with pytest.raises(InvalidRequest) as err:
        req.check()
    assert err.value.param == param
