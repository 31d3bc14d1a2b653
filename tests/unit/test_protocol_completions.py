from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from tokendock.errors import InvalidRequest, TokenDockError, UnsupportedParameter
from tokendock.inference.engine.embedded import refuse_unsupported
from tokendock.protocol.common import response_body, usage_dict
from tokendock.protocol.completions import (
    CompletionRequest,
    text_choice,
)
from tokendock.protocol.errors import from_validation_error
from tokendock.web.api.completions import inference_request


def parse(body: dict[str, Any]) -> CompletionRequest:
    """JSON bytes → schema, strictly, exactly as web/deps.py parse_body does."""
    return CompletionRequest.model_validate_json(orjson.dumps(body), strict=True)


def rejected(body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(ValidationError) as info:
        parse(body)
    return from_validation_error(info.value)


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "gemma-3-270m", "prompt": "Once upon a time", **fields}


def check_error(**fields: Any) -> TokenDockError:
    """The 400 of the request's own rules, or of what the embedded engine cannot do (the
    features the wire adapter reads, refused by the embedded backend)."""
    req = parse(completion(**fields))

    def checks() -> None:
        req.check()
        refuse_unsupported(inference_request(req, orjson.dumps(completion(**fields))).features)

    with pytest.raises(TokenDockError) as info:
        checks()
    return info.value


# --- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    req = parse(completion())
    req.check()
    assert req.max_tokens == 16
    assert req.echo is False
    assert req.n is None
    assert req.best_of is None
    assert req.suffix is None
    assert req.stop_list() == ()


def test_max_tokens_zero_is_allowed_negative_is_not() -> None:
    assert parse(completion(max_tokens=0)).max_tokens == 0
    err = rejected(completion(max_tokens=-1))
    assert err.param == "max_tokens"
    assert "greater than or equal to 0" in err.message


def test_echo() -> None:
    assert parse(completion(echo=True)).echo is True
    err = rejected(completion(echo=1))
    assert err.param == "echo"
    assert "got a number" in err.message


def test_unknown_extra_fields_are_ignored() -> None:
    req = parse(completion(whatever=[1, 2], top_k=40))
    req.check()
    assert "whatever" not in req.model_dump()
    assert "top_k" not in req.model_dump()


def test_shared_sampling_rules_apply() -> None:
    assert rejected(completion(temperature=3)).param == "temperature"
    assert rejected(completion(stop=["1", "2", "3", "4", "5"])).param == "stop"
    assert rejected(completion(logit_bias={"7": 100.5})).param == "logit_bias"
    assert rejected(completion(n=False)).param == "n"
    err = check_error(stream_options={"include_usage": True})
    assert err.param == "stream_options"
    assert parse(completion(temperature=0)).temperature == 0.0


# --- prompt forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Say hi", ["Say hi"]),
        ("", [""]),
        (["one", "two"], ["one", "two"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([0], [[0]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
        ([[7]], [[7]]),
    ],
)
def test_prompt_forms(prompt: Any, expected: list[str | list[int]]) -> None:
    req = parse(completion(prompt=prompt))
    req.check()
    assert req.prompts() == expected


def test_prompts_returns_fresh_lists() -> None:
    req = parse(completion(prompt=[5, 6]))
    out = req.prompts()
    out[0].append(7)  # type: ignore[union-attr]
    assert req.prompts() == [[5, 6]]


def test_missing_prompt() -> None:
    err = rejected({"model": "m"})
    assert err.param == "prompt"
    assert err.message == "Missing required parameter: 'prompt'."


def test_empty_prompt_list_rejected_by_check() -> None:
    err = check_error(prompt=[])
    assert type(err) is InvalidRequest
    assert err.param == "prompt"


@pytest.mark.parametrize("prompt", [5, None, {"text": "x"}, [1, "a"], [True], [["a"]], [1.5]])
def test_bad_prompt_types_name_prompt(prompt: Any) -> None:
    err = rejected(completion(prompt=prompt))
    # The deepest error wins: a bad element is named by its index, e.g. prompt[1].
    assert err.param is not None and err.param.startswith("prompt")
    assert err.message.startswith(f"Invalid type for '{err.param}'")


def test_negative_token_id_is_reported_as_such() -> None:
    err = rejected(completion(prompt=[-1]))
    assert err.param is not None
    assert err.param.startswith("prompt")
    assert "greater than or equal to 0" in err.message, (
        "BUG (protocol/errors.py from_validation_error): reports the first union member's error, "
        "so a token list with a negative id is described as 'should be a valid string (got an "
        f"array)' although arrays are allowed: {err.message!r}"
    )


# --- check(): unsupported parameters ----------------------------------------------------------


def test_best_of_other_than_n_is_unsupported() -> None:
    err = check_error(best_of=2)
    assert isinstance(err, UnsupportedParameter)
    assert err.param == "best_of"
    assert err.code == "unsupported_parameter"
    assert check_error(best_of=3, n=2).param == "best_of"


def test_best_of_equal_to_n_is_fine() -> None:
    parse(completion(best_of=1)).check()
    parse(completion(best_of=2, n=2)).check()


def test_best_of_range() -> None:
    assert rejected(completion(best_of=21)).param == "best_of"
    assert rejected(completion(best_of=0)).param == "best_of"


def test_suffix_is_unsupported() -> None:
    err = check_error(suffix=" The end.")
    assert isinstance(err, UnsupportedParameter)
    assert err.param == "suffix"


def test_empty_or_null_suffix_is_fine() -> None:
    parse(completion(suffix="")).check()
    parse(completion(suffix=None)).check()


def check_error_free(**fields: Any) -> None:
    req = parse(completion(**fields))
    req.check()
    refuse_unsupported(inference_request(req, orjson.dumps(completion(**fields))).features)


def test_logprobs_is_taken_and_range_checked() -> None:
    check_error_free(logprobs=0)
    check_error_free(logprobs=5, echo=True)
    assert rejected(completion(logprobs=6)).param == "logprobs"
    assert rejected(completion(logprobs=True)).param == "logprobs"


# --- response shapes --------------------------------------------------------------------------


def test_text_completion_body_shape() -> None:
    body = response_body(
        "text_completion",
        response_id="cmpl-1",
        created=9,
        model="m",
        choices=[text_choice(0, "a", "stop"), text_choice(1, "b", "length")],
        usage=usage_dict(2, 3),
    )
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"index": 0, "text": "a", "logprobs": None, "finish_reason": "stop"},
        {"index": 1, "text": "b", "logprobs": None, "finish_reason": "length"},
    ]
    assert body["usage"]["total_tokens"] == 5
