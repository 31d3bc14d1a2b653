"""Tool calls as text: the prompt that offers them and the parser that reads them back."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tokendock.inference.engine.tools import CallArguments, CallParser, CallStart, Piece, offer
from tokendock.inference.structured import Tool, ToolUse
from tokendock.inference.vocabulary import ChatTurn, ToolCall

WEATHER = Tool("get_weather", "Weather now", {"type": "object"})


def parse(chunks: list[str]) -> list[Piece]:
    parser = CallParser()
    out: list[Piece] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    out.extend(parser.finish())
    return out


def calls_of(pieces: list[Piece]) -> tuple[str, list[tuple[str, str]]]:
    text = "".join(p for p in pieces if isinstance(p, str))
    calls: list[tuple[str, str]] = []
    for p in pieces:
        if isinstance(p, CallStart):
            assert p.index == len(calls)
            assert p.id.startswith("call_")
            calls.append((p.name, ""))
        elif isinstance(p, CallArguments):
            name, args = calls[p.index]
            calls[p.index] = (name, args + p.text)
    return text, calls


ANSWER = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
    '"units": {"c": true}, "note": "a } and \\" inside"}}\n</tool_call>\n<tool_call>\n'
    '{"name": "get_time", "arguments": {}}\n</tool_call>'
)


def test_calls_parse_whole() -> None:
    text, calls = calls_of(parse([ANSWER]))
    assert text == "Let me check.\n"
    assert [name for name, _ in calls] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0][1]) == {
        "city": "Paris",
        "units": {"c": True},
        "note": 'a } and " inside',
    }
    assert orjson.loads(calls[1][1]) == {}


@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER)), max_size=30))
def test_calls_parse_the_same_in_any_pieces(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [ANSWER[a:b] for a, b in zip([0, *points], [*points, len(ANSWER)], strict=True)]
    assert calls_of(parse(chunks)) == calls_of(parse([ANSWER]))


def test_name_comes_before_arguments_when_streamed() -> None:
    parser = CallParser()
    assert parser.feed("<tool_") == []  # might open a call: held back
    assert parser.feed('call>\n{"name": "get_we') == []
    start = parser.feed('ather", "arguments": {"ci')
    assert isinstance(start[0], CallStart) and start[0].name == "get_weather"
    assert start[1:] == [CallArguments(0, '{"ci')]


def test_text_that_only_looks_like_a_call_is_text() -> None:
    assert calls_of(parse(["a <tool", " b"])) == ("a <tool b", [])
    assert calls_of(parse(["<tool_call>oops"])) == ("<tool_call>oops", [])
    # A call cut short (max_tokens) before its name is complete is no call, and no text.
    assert calls_of(parse(['<tool_call>\n{"nam'])) == ("", [])


def test_offer_puts_tools_in_the_system_turn_and_history_in_text() -> None:
    use = ToolUse((WEATHER,), "required")
    turns = offer(
        [
            ChatTurn("system", "Be brief."),
            ChatTurn("user", "Weather in Paris?"),
            ChatTurn(
                "assistant",
                "",
                tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),),
            ),
            ChatTurn("tool", "18 C", tool_call_id="call_1"),
            ChatTurn("tool", "sunny", tool_call_id="call_2"),
        ],
        use,
    )
    assert [t.role for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[0].content.startswith("Be brief.\n\n")
    assert '"name":"get_weather"' in turns[0].content
    assert "You must call at least one function." in turns[0].content
    assert turns[2].content == (
        '<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n</tool_call>'
    )
    assert turns[3].content == (
        "<tool_response>\n18 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
    )


def test_no_tools_offered_when_choice_is_none() -> None:
    turns = offer([ChatTurn("user", "hi")], ToolUse((WEATHER,), "none"))
    assert turns == (ChatTurn("user", "hi"),)
