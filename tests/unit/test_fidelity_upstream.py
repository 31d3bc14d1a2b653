"""Upstream fidelity (inference/upstream/backend.py, web/api/chat.py): every field of an
upstream's chat message / delta and choice that the events do not type — `audio`,
`annotations`, reasoning fields, vLLM's `stop_reason` — reaches the client as it came, and
logprobs (with their `refusal`) unchanged; reasoning text counts in an estimate."""

from __future__ import annotations

from typing import Any

from tokendock.inference.backend import Delta, Finish
from tokendock.inference.upstream.backend import _choice_events
from tokendock.inference.upstream.reply import Seen, answer_seen, choice_text, observe
from tokendock.web.api.chat import ChatWire
from tokendock.web.api.respond import Stamp

AUDIO = {"id": "audio_1", "data": "UklGRg==", "transcript": "Hello", "expires_at": 1}
ANNOTATIONS = [
    {
        "type": "url_citation",
        "url_citation": {
            "url": "https://example.com",
            "title": "Ex",
            "start_index": 0,
            "end_index": 5,
        },
    }
]
DETAILS = [{"type": "reasoning.text", "text": "think", "format": "unknown", "index": 0}]
LOGPROBS = {
    "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}],
    "refusal": [],
}


def whole_answer() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "refusal": None,
                    "audio": AUDIO,
                    "annotations": ANNOTATIONS,
                    "reasoning_content": "Let me think.",
                    "reasoning_details": DETAILS,
                },
                "logprobs": LOGPROBS,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }


def test_a_whole_answer_keeps_every_field_of_its_message_and_choice() -> None:
    delta, finish = _choice_events(whole_answer(), "message")
    assert isinstance(delta, Delta) and isinstance(finish, Finish)
    assert delta.text == "Hello" and delta.logprobs == LOGPROBS
    assert delta.extra == {
        "audio": AUDIO,
        "annotations": ANNOTATIONS,
        "reasoning_content": "Let me think.",
        "reasoning_details": DETAILS,
    }
    assert finish.reason == "stop" and finish.extra == {"stop_reason": None}


def test_stream_chunks_keep_reasoning_audio_and_logprob_refusal() -> None:
    thinking = {"choices": [{"index": 0, "delta": {"reasoning_content": "Hm"}}]}
    speaking = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Hi", "audio": {"id": "a", "transcript": "Hi"}},
                "logprobs": LOGPROBS,
            }
        ]
    }
    ending = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": 7}]}
    (first,) = _choice_events(thinking, "delta")
    assert (
        isinstance(first, Delta) and first.text == "" and first.extra == {"reasoning_content": "Hm"}
    )
    (second,) = _choice_events(speaking, "delta")
    assert isinstance(second, Delta) and second.extra == {"audio": {"id": "a", "transcript": "Hi"}}
    assert second.logprobs is not None and second.logprobs["refusal"] == []
    delta, finish = _choice_events(ending, "delta")
    assert isinstance(delta, Delta) and delta.extra is None
    assert finish == Finish(0, "stop", extra={"stop_reason": 7})


def test_plain_answers_carry_no_extra() -> None:
    plain = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "x"}}]}
    (delta,) = _choice_events(plain, "delta")
    assert isinstance(delta, Delta) and delta.extra is None
    ended = {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    finish = _choice_events(ended, "delta")[-1]
    assert isinstance(finish, Finish) and finish.extra is None


def test_the_chat_wire_renders_extra_into_the_delta_and_the_choice() -> None:
    wire, stamp = ChatWire(), Stamp("chatcmpl-x", 1, "m")
    extra = {"reasoning_content": "Hm", "annotations": ANNOTATIONS}
    chunk = wire.chunk(stamp, Delta(0, "Hi", logprobs=LOGPROBS, extra=extra), False)
    (choice,) = chunk["choices"]
    assert choice["delta"] == {"content": "Hi", **extra}
    assert choice["logprobs"] == LOGPROBS
    end = wire.chunk(stamp, Finish(0, "stop", extra={"stop_reason": 7}), False)
    assert end["choices"][0]["finish_reason"] == "stop"
    assert end["choices"][0]["stop_reason"] == 7
    typed = wire.chunk(stamp, Delta(0, "Hi"), False)["choices"][0]
    assert typed["delta"] == {"content": "Hi"} and "stop_reason" not in typed


def test_reasoning_text_counts_in_an_estimate() -> None:
    assert choice_text({"delta": {"reasoning_content": "abcd"}}) == "abcd"
    assert choice_text({"delta": {"content": "ab", "reasoning": "cd"}}) == "abcd"
    assert choice_text({"delta": {"tool_calls": ["junk", {"function": 3}]}}) == ""
    seen = Seen()
    assert observe(seen, {"choices": [{"delta": {"reasoning_content": "Hm"}}]})
    assert seen.pieces == 1 and seen.chars == 2
    assert answer_seen(whole_answer()).chars == len("Hello") + len("Let me think.")
