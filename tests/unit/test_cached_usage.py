"""Cached prompt tokens in the wire shapes (OpenAI chat/completions, Responses, Anthropic
Messages) and as read from an upstream's usage (which is not trusted)."""

from __future__ import annotations

from typing import Any

import pytest

from tokendock.inference.upstream.reply import Seen, answer_seen, cached_count, observe
from tokendock.protocol.common import usage_dict
from tokendock.protocol.messages import message_body, usage
from tokendock.protocol.response_shapes import response_usage


def test_openai_usage_names_cached_prompt_tokens() -> None:
    assert usage_dict(400, 10, 380) == {
        "prompt_tokens": 400,
        "completion_tokens": 10,
        "total_tokens": 410,
        "prompt_tokens_details": {"cached_tokens": 380},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage_dict(4, 1)["prompt_tokens_details"] == {"cached_tokens": 0}


def test_responses_usage_names_cached_input_tokens() -> None:
    got = response_usage(400, 10, 380)
    assert got["input_tokens"] == 400 and got["total_tokens"] == 410
    assert got["input_tokens_details"] == {"cached_tokens": 380}


def test_anthropic_input_tokens_leave_out_the_cache_reads() -> None:
    assert usage(400, 10, 380) == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 380,
        "output_tokens": 10,
    }
    body = message_body("msg_1", "m", [], "end_turn", 400, 10, None, 380)
    assert body["usage"]["input_tokens"] + body["usage"]["cache_read_input_tokens"] == 400
    assert message_body("msg_1", "m", [], None, 7, 0)["usage"]["input_tokens"] == 7


@pytest.mark.parametrize(
    ("reported", "cached"),
    [
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 7}}, 7),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}}, 0),
        ({"prompt_tokens": 9}, 0),  # not reported
        ({"prompt_tokens": 9, "prompt_tokens_details": None}, 0),  # vLLM without the flag
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 50}}, 9),  # > prompt
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": -3}}, 0),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": "7"}}, 0),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": True}}, 0),
        ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 2**40}}, 0),
        ({"prompt_tokens_details": {"cached_tokens": 7}}, 0),  # no prompt count: nothing
    ],
)
def test_upstream_cached_tokens_are_believed_only_when_sane(
    reported: dict[str, Any], cached: int
) -> None:
    assert cached_count({**reported, "completion_tokens": 1}) == cached


def test_upstream_usage_is_read_from_answers_and_stream_events() -> None:
    usage_json = {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    whole = answer_seen({"choices": [], "usage": usage_json})
    assert whole.usage is not None and cached_count(whole.usage) == 8
    seen = Seen()
    observe(seen, {"choices": [], "usage": usage_json})  # the stream's usage-only tail
    assert seen.usage is not None and cached_count(seen.usage) == 8
