"""A whole answer from streamed pieces: tool-call deltas, function_call deltas, logprobs."""

from __future__ import annotations

from tokendock.services.answer import _merge_calls, _merge_function_call, _merge_logprobs


def test_streamed_tool_call_pieces_make_whole_calls() -> None:
    pieces = [
        {
            "index": 0,
            "id": "call_a",
            "type": "function",
            "function": {"name": "f", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"x": '}},
        {"index": 0, "function": {"arguments": "1}"}},
        {
            "index": 1,
            "id": "call_b",
            "type": "function",
            "function": {"name": "g", "arguments": ""},
        },
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    calls: list[dict[str, object]] = []
    for piece in pieces:
        calls = _merge_calls(calls, [piece])
    assert calls == [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert pieces[0]["function"] == {"name": "f", "arguments": ""}  # inputs untouched


def test_whole_calls_without_index_are_kept_as_they_are() -> None:
    whole = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert _merge_calls([], [whole]) == [whole]


def test_function_call_pieces_concatenate_arguments() -> None:
    merged = _merge_function_call(None, {"name": "f", "arguments": '{"a"'})
    merged = _merge_function_call(merged, {"arguments": ": 1}"})
    assert merged == {"name": "f", "arguments": '{"a": 1}'}


def test_logprob_lists_concatenate() -> None:
    merged = _merge_logprobs(None, {"content": [{"token": "a"}], "refusal": None})
    merged = _merge_logprobs(merged, {"content": [{"token": "b"}], "refusal": None})
    assert merged == {"content": [{"token": "a"}, {"token": "b"}], "refusal": None}
