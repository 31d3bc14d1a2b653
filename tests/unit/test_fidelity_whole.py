"""Upstream fidelity in a whole (non-streamed) chat answer (services/answer.py assembles it,
web/api/chat.py renders it): the message's `audio`, `annotations` and reasoning fields and the
choice's `stop_reason` reach the client as the upstream sent them; logprobs unchanged."""

from __future__ import annotations

from tests.unit.test_fidelity_upstream import ANNOTATIONS, AUDIO, LOGPROBS, whole_answer
from tokendock.inference.backend import Delta, Finish
from tokendock.inference.upstream.backend import _choice_events
from tokendock.services.answer import Answer
from tokendock.web.api.chat import ChatWire
from tokendock.web.api.respond import Stamp


def test_a_whole_upstream_answer_is_rendered_with_every_field() -> None:
    answer = Answer()
    for event in _choice_events(whole_answer(), "message"):
        answer.take(event)
    body = ChatWire().body(Stamp("chatcmpl-x", 1, "m"), answer, {"total_tokens": 8})
    (choice,) = body["choices"]
    message = choice["message"]
    assert message["content"] == "Hello" and message["refusal"] is None
    assert message["audio"] == AUDIO and message["annotations"] == ANNOTATIONS
    assert message["reasoning_content"] == "Let me think."
    assert choice["logprobs"] == LOGPROBS
    assert choice["finish_reason"] == "stop" and "stop_reason" in choice


def test_streamed_extras_join_up_in_an_assembled_answer() -> None:
    """A streamed answer assembled whole (batch lines, stored answers): reasoning text and
    annotation lists join; other values are the latest sent."""
    answer = Answer()
    answer.take(Delta(0, "", extra={"reasoning_content": "Let "}))
    answer.take(Delta(0, "Hi", extra={"reasoning_content": "me.", "annotations": [1]}))
    answer.take(Delta(0, "", extra={"annotations": [2], "audio": {"id": "b"}}))
    answer.take(Finish(0, "stop", extra={"stop_reason": 7}))
    (choice,) = answer.choices
    assert choice.extra == {
        "reasoning_content": "Let me.",
        "annotations": [1, 2],
        "audio": {"id": "b"},
    }
    assert choice.finish_extra == {"stop_reason": 7}


def test_an_embedded_answer_has_no_extra_fields() -> None:
    answer = Answer()
    answer.take(Delta(0, "Hi"))
    answer.take(Finish(0, "stop"))
    body = ChatWire().body(Stamp("chatcmpl-x", 1, "m"), answer, {})
    assert set(body["choices"][0]["message"]) == {"role", "content", "refusal"}
    assert set(body["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}
