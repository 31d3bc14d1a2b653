"""The embedded engine's tool-call budget cut (engine/shaping.py, engine/tools.py): when the
output budget runs out inside a call after complete ones, the choice ends with the complete
calls (`tool_calls`), the cut call dropped — and, streamed, none of its pieces or logprobs was
ever sent. Also: chat logprobs carry `refusal: []`, never null."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tokendock.inference.backend import Delta, Event, Finish
from tokendock.inference.engine.shaping import ChoiceShaper
from tokendock.inference.engine.tools import CallParser
from tokendock.inference.structured import Tool, ToolUse
from tokendock.inference.vocabulary import TokenLogprob

TOOLS = ToolUse((Tool("get_weather", "", {"type": "object"}),), "required", parallel=True)
LEGACY = ToolUse((Tool("get_weather", "", {"type": "object"}),), "auto", False, legacy=True)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s"}}\n</tool_call>'
TWO = CALL % "Paris" + "\n" + CALL % "Rome"
CUT_THIRD = TWO + '\n<tool_call>\n{"name": "get_weather", "arguments": {"ci'


def run(texts: list[str], reason: str, *, logprobs: bool = False) -> list[Event]:
    """The events of one chat choice fed `texts` (one token each), then finished by `reason`."""
    shaper = ChoiceShaper(0, "chat", TOOLS, logprobs)
    events: list[Event] = []
    for text in texts:
        entries = [TokenLogprob(text, -0.5, text.encode())] if logprobs else []
        events.extend(shaper.text(text, entries))
    events.extend(shaper.finish(reason))
    return events


def calls_of(events: Sequence[Event]) -> list[tuple[str, str]]:
    """The calls the events make: (name, arguments) per call index."""
    calls: dict[int, tuple[str, str]] = {}
    for event in events:
        if isinstance(event, Delta):
            for piece in event.tool_calls or ():
                name, args = calls.get(piece["index"], ("", ""))
                fn = piece["function"]
                calls[piece["index"]] = (fn.get("name", name), args + fn["arguments"])
    return [calls[i] for i in sorted(calls)]


def tokens(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_a_call_cut_after_complete_ones_is_dropped_and_the_answer_is_tool_calls() -> None:
    events = run(tokens(CUT_THIRD), "length")
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    calls = calls_of(events)
    assert [orjson.loads(args) for _, args in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(name == "get_weather" for name, _ in calls)
    assert not any(isinstance(e, Delta) and e.text for e in events)  # no stray "<tool_call>"


@given(st.integers(min_value=len(CALL % "Paris") + 1, max_value=len(TWO) - 1), st.integers(1, 9))
def test_a_cut_anywhere_in_the_second_call_keeps_only_the_first(at: int, size: int) -> None:
    """Cut at any character of the second call (or of the newline before it), in tokens of
    any size: only the first call arrives, whole and valid."""
    events = run(tokens(TWO[:at], size), "length")
    assert events[-1] == Finish(0, "tool_calls")
    assert [orjson.loads(args) for _, args in calls_of(events)] == [{"city": "Paris"}]


def test_a_cut_inside_the_first_call_stays_length() -> None:
    events = run(tokens(CALL[:40]), "length")
    assert events[-1] == Finish(0, "length")


def test_calls_that_end_whole_are_unchanged() -> None:
    events = run(tokens(TWO), "stop")
    assert events[-1] == Finish(0, "tool_calls")
    assert len(calls_of(events)) == 2
    # cut at the end of a complete call (nothing further begun): nothing to drop
    assert run(tokens(CALL % "Paris"), "length")[-1] == Finish(0, "length")


def test_a_later_call_streams_only_once_it_is_complete() -> None:
    """The first call streams in pieces; the second comes out in the event that closes it."""
    shaper = ChoiceShaper(0, "chat", TOOLS, False)
    first = CALL % "Paris" + "\n"
    sent = [e for t in tokens(first) for e in shaper.text(t, [])]
    assert len(calls_of(sent)) == 1
    second = tokens(CALL % "Rome")
    for token in second[:-1]:
        assert shaper.text(token, []) == []  # held back
    last = shaper.text(second[-1], [])
    assert [orjson.loads(a) for _, a in calls_of(last)] == [{"city": "Rome"}]


def test_logprobs_of_a_cut_call_are_dropped_and_refusal_is_an_empty_list() -> None:
    texts = tokens(CUT_THIRD)
    events = run(texts, "length", logprobs=True)
    entries = []
    for event in events:
        if isinstance(event, Delta) and event.logprobs is not None:
            assert event.logprobs["refusal"] == []
            entries.extend(event.logprobs["content"])
    # every token up to the end of the second call, in order; of the cut call at most the
    # rest of the token that closed the second one (a token is 3 characters here)
    sent = "".join(e["token"] for e in entries)
    assert sent.startswith(TWO) and len(sent) < len(TWO) + 3
    whole = run(tokens(TWO), "stop", logprobs=True)
    assert "".join(
        e["token"]
        for ev in whole
        if isinstance(ev, Delta) and ev.logprobs
        for e in ev.logprobs["content"]
    ) == "".join(tokens(TWO))


def test_plain_chat_logprobs_carry_an_empty_refusal_list() -> None:
    shaper = ChoiceShaper(0, "chat", None, True)
    (delta,) = shaper.text("Hi", [TokenLogprob("Hi", -0.1, b"Hi")])
    assert delta.logprobs is not None and delta.logprobs["refusal"] == []
    assert delta.logprobs["content"][0]["token"] == "Hi"


def test_legacy_function_call_cut_is_unchanged() -> None:
    """The deprecated `functions` form makes one call: a cut inside it stays `length`."""
    shaper = ChoiceShaper(0, "chat", LEGACY, False)
    events: list[Event] = []
    for token in tokens(CALL[:50]):
        events.extend(shaper.text(token, []))
    events.extend(shaper.finish("length"))
    assert events[-1] == Finish(0, "length")


def test_parser_cut_reports_whether_it_dropped_a_call() -> None:
    parser = CallParser()
    parser.feed(CALL % "Paris")
    assert parser.closed == 1 and not parser.holding and not parser.cut()
    parser.feed("\n<tool_c")
    assert parser.holding and parser.cut()
    assert parser.finish() == []
