from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tokendock.billing.ledger import Hold, Settlement
from tokendock.billing.pricing import Price
from tokendock.errors import ContextLengthExceeded, GenerationFailed
from tokendock.inference.base import Engine, Generation, Sampling
from tokendock.services.completions import ChoiceEvent, Plan, Run
from tokendock.services.gate import Admitted
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.chat import chat_chunk
from tokendock.web.api.streaming import Stamp, sse_events

DONE = b"data: [DONE]\n\n"
SECRET = "segfault in ggml at 0xdeadbeef"
STAMP = Stamp("chatcmpl-test", 1700000000, "gemma-3-270m")


class DummyEngine:
    """sse_events never touches the engine; it only has to fill the Plan."""

    model_id = "gemma-3-270m"


def plan(choices: int = 1, prompt_tokens: int = 11) -> Run:
    """An admitted run around a plan; sse_events reads only the plan and the settlement."""
    engine: Engine = DummyEngine()  # type: ignore[assignment]
    jobs = [Generation(prompt=[1, 2, 3], max_tokens=32) for _ in range(choices)]
    key = KeyRow(1, 1, "k", "td-abcd", "wxyz", datetime.now(UTC), None, None, None, None, 0, None)
    bounded = Plan(
        engine,
        "gemma-3-270m",
        ["hello"],
        n=choices,
        max_tokens=32,
        output_cap=32,
        stop=(),
        sampling=Sampling(),
        prompt_bound=prompt_tokens,
        max_completion=32 * choices,
        param="prompt",
    )
    run = Run(
        bounded,
        key,
        Admitted(Hold("hold_x", 1, 1, 100, 900), Price(1_000_000, 2_000_000), None),
        "req_x",
        jobs=jobs,
        prefixes=[""] * choices,
        prompt_tokens=prompt_tokens,
    )
    run.settlement = Settlement(charged=42, balance=900)
    return run


class FakeEvents:
    """An async iterator of ChoiceEvent that can fail after some events and records aclose()."""

    def __init__(self, events: Iterable[ChoiceEvent], fail_with: BaseException | None = None):
        self._events = list(events)
        self._fail_with = fail_with
        self.closed = False

    def __aiter__(self) -> FakeEvents:
        return self

    async def __anext__(self) -> ChoiceEvent:
        if self._events:
            return self._events.pop(0)
        if self._fail_with is not None:
            raise self._fail_with
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


async def collect(
    events: FakeEvents,
    *,
    choices: int = 1,
    include_usage: bool = False,
    opening: bool = True,
    prompt_tokens: int = 11,
) -> list[bytes]:
    out = sse_events(
        events,
        plan(choices, prompt_tokens),
        STAMP,
        chat_chunk(include_usage),
        include_usage=include_usage,
        object_name="chat.completion.chunk",
        opening=opening,
    )
    return [item async for item in out]


def decode(frames: list[bytes]) -> list[dict[str, Any]]:
    """Every frame but the last is `data: <json>\\n\\n`; returns the JSON bodies."""
    bodies = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: "), frame
        assert frame.endswith(b"\n\n"), frame
        assert frame.count(b"\n") == 2, "one event per frame, one data line per event"
        bodies.append(orjson.loads(frame[len(b"data: ") : -2]))
    return bodies


def deltas(bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], str | None]]:
    return [
        (b["choices"][0]["index"], b["choices"][0]["delta"], b["choices"][0]["finish_reason"])
        for b in bodies
        if b.get("choices")
    ]


# --- framing ----------------------------------------------------------------------------------


async def test_single_choice_stream_framing() -> None:
    events = FakeEvents(
        [
            ChoiceEvent(0, "Hel"),
            ChoiceEvent(0, "lo"),
            ChoiceEvent(0, finish_reason="stop", completion_tokens=2),
        ]
    )
    frames = await collect(events)
    assert frames[-1] == DONE
    assert frames.count(DONE) == 1
    bodies = decode(frames)
    assert deltas(bodies) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Hel"}, None),
        (0, {"content": "lo"}, None),
        (0, {}, "stop"),
    ]
    for body in bodies:
        assert body["id"] == "chatcmpl-test"
        assert body["created"] == 1700000000
        assert body["model"] == "gemma-3-270m"
        assert body["object"] == "chat.completion.chunk"
        assert "usage" not in body
    assert events.closed is True


async def test_no_opening_chunks_when_not_asked() -> None:
    events = FakeEvents([ChoiceEvent(0, "x"), ChoiceEvent(0, finish_reason="length")])
    frames = await collect(events, opening=False)
    assert deltas(decode(frames)) == [(0, {"content": "x"}, None), (0, {}, "length")]
    assert frames[-1] == DONE


async def test_several_choices_open_first_then_one_finish_each() -> None:
    events = FakeEvents(
        [
            ChoiceEvent(1, "b"),
            ChoiceEvent(0, "a"),
            ChoiceEvent(2, "c"),
            ChoiceEvent(1, finish_reason="length", completion_tokens=4),
            ChoiceEvent(0, "a2"),
            ChoiceEvent(0, finish_reason="stop", completion_tokens=2),
            ChoiceEvent(2, finish_reason="stop", completion_tokens=1),
        ]
    )
    frames = await collect(events, choices=3)
    got = deltas(decode(frames))
    assert got[:3] == [(i, {"role": "assistant", "content": ""}, None) for i in range(3)]
    assert got[3:] == [
        (1, {"content": "b"}, None),
        (0, {"content": "a"}, None),
        (2, {"content": "c"}, None),
        (1, {}, "length"),
        (0, {"content": "a2"}, None),
        (0, {}, "stop"),
        (2, {}, "stop"),
    ]
    finishes = [index for index, _, finish in got if finish is not None]
    assert sorted(finishes) == [0, 1, 2]
    assert frames[-1] == DONE


async def test_usage_chunk_only_when_asked() -> None:
    def script() -> FakeEvents:
        return FakeEvents(
            [
                ChoiceEvent(0, "a"),
                ChoiceEvent(1, "b"),
                ChoiceEvent(0, finish_reason="stop", completion_tokens=3),
                ChoiceEvent(1, finish_reason="length", completion_tokens=5),
            ]
        )

    without = decode(await collect(script(), choices=2, include_usage=False))
    assert all(body["choices"] for body in without)
    assert all("usage" not in body for body in without)

    frames = await collect(script(), choices=2, include_usage=True, prompt_tokens=11)
    assert frames[-1] == DONE
    bodies = decode(frames)
    usage_chunk = bodies[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["object"] == "chat.completion.chunk"
    assert usage_chunk["id"] == "chatcmpl-test"
    assert usage_chunk["usage"]["prompt_tokens"] == 11
    assert usage_chunk["usage"]["completion_tokens"] == 8
    assert usage_chunk["usage"]["total_tokens"] == 19
    # Exactly one usage chunk, after every finish chunk; the others carry usage: null.
    assert [b for b in bodies if b["choices"] == []] == [usage_chunk]
    assert all(b["usage"] is None for b in bodies[:-1])
    assert len(bodies) == 2 + 4 + 1


async def test_empty_event_stream_still_ends_with_done() -> None:
    frames = await collect(FakeEvents([]), opening=False)
    assert frames == [DONE]


async def test_usage_object_name_is_passed_through() -> None:
    events = FakeEvents([ChoiceEvent(0, finish_reason="stop", completion_tokens=1)])
    out = sse_events(
        events,
        plan(),
        STAMP,
        chat_chunk(True),
        include_usage=True,
        object_name="text_completion",
        opening=False,
    )
    frames = [item async for item in out]
    assert decode(frames)[-1]["object"] == "text_completion"


# --- failures mid-stream ----------------------------------------------------------------------


async def test_tokendock_error_after_first_event_becomes_error_event_then_done() -> None:
    failure = GenerationFailed("The model stopped responding.")
    events = FakeEvents([ChoiceEvent(0, "partial")], fail_with=failure)
    frames = await collect(events, include_usage=True)
    assert frames[-1] == DONE
    bodies = decode(frames)
    assert bodies[-1] == {
        "error": {
            "message": "The server had an error while generating.",
            "type": "server_error",
            "param": None,
            "code": "generation_failed",
        }
    }
    assert deltas(bodies[:-1]) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "partial"}, None),
    ]
    # No usage chunk and no finish chunk after a failure.
    assert all(body.get("choices") != [] for body in bodies)
    assert events.closed is True


async def test_client_error_type_is_kept_in_the_error_event() -> None:
    failure = ContextLengthExceeded("too long", param="messages")
    frames = await collect(FakeEvents([ChoiceEvent(0, "x")], fail_with=failure))
    error = decode(frames)[-1]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert frames[-1] == DONE


async def test_unexpected_error_becomes_generic_500_event_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = FakeEvents([ChoiceEvent(0, "partial")], fail_with=RuntimeError(SECRET))
    with caplog.at_level(logging.ERROR, logger="tokendock.web.api.streaming"):
        frames = await collect(events)
    assert frames[-1] == DONE
    assert frames.count(DONE) == 1
    error = decode(frames)[-1]["error"]
    assert error == {
        "message": "The server had an error while generating.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    raw = b"".join(frames)
    assert SECRET.encode() not in raw
    assert b"Traceback" not in raw
    assert b"RuntimeError" not in raw
    assert events.closed is True
    # The details are logged server-side with the stream id.
    assert any("chatcmpl-test" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_failure_before_any_event_still_frames_correctly() -> None:
    frames = await collect(FakeEvents([], fail_with=RuntimeError(SECRET)), opening=False)
    assert len(frames) == 2
    assert decode(frames)[0]["error"]["type"] == "server_error"
    assert frames[-1] == DONE


async def test_closing_the_stream_early_closes_the_event_source() -> None:
    events = FakeEvents([ChoiceEvent(0, "a"), ChoiceEvent(0, "b"), ChoiceEvent(0, "c")])
    out = sse_events(
        events,
        plan(),
        STAMP,
        chat_chunk(False),
        include_usage=False,
        object_name="chat.completion.chunk",
        opening=True,
    )
    first = await anext(out)
    assert decode([first, DONE])[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    await out.aclose()  # type: ignore[attr-defined]
    assert events.closed is True


def test_stamp_new() -> None:
    stamp = Stamp.new("chatcmpl", "m")
    assert stamp.id.startswith("chatcmpl-")
    assert len(stamp.id) == len("chatcmpl-") + 24
    assert stamp.model == "m"
    assert stamp.created > 1_600_000_000
    assert Stamp.new("chatcmpl", "m").id != stamp.id


async def test_engine_failure_keeps_its_code_but_not_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failure = GenerationFailed(f"Generation failed: {SECRET}")
    with caplog.at_level(logging.ERROR, logger="tokendock.web.api.streaming"):
        frames = await collect(FakeEvents([ChoiceEvent(0, "x")], fail_with=failure))
    error = decode(frames)[-1]["error"]
    assert error["code"] == "generation_failed"
    assert error["type"] == "server_error"
    assert SECRET.encode() not in b"".join(frames)
    assert any(r.exc_info for r in caplog.records)  # the text is in the log
