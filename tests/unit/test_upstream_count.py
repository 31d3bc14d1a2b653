"""An upstream model's input-token count is the estimate its bill uses when a deployment reports
no usage — one function (`estimate_prompt`), so a count and such a bill agree."""

from __future__ import annotations

import asyncio

from tokendock.inference.backend import InferenceRequest
from tokendock.inference.structured import Tool, ToolUse
from tokendock.inference.upstream.backend import UpstreamBackend, estimate_prompt
from tokendock.inference.vocabulary import ChatTurn, ToolCall


def test_a_chat_counts_text_calls_and_tools_plus_a_few_tokens_a_turn() -> None:
    turns = (
        ChatTurn("user", "x" * 40),  # 10 tokens
        ChatTurn("assistant", "", tool_calls=(ToolCall("c1", "f" * 4, "a" * 36),)),  # 10
    )
    tools = ToolUse((Tool("g" * 8, "d" * 32, None),))  # 10
    req = InferenceRequest(kind="chat", model="m", turns=turns, tools=tools)
    assert estimate_prompt(req) == 30 + 4 * 3  # 4 a turn, and one for the assistant's opening
    unused = InferenceRequest(
        kind="chat", model="m", turns=turns, tools=ToolUse(tools.tools, "none")
    )
    assert estimate_prompt(unused) == 20 + 4 * 3  # tools not offered are not counted


def test_text_prompts_count_characters_and_token_ids() -> None:
    req = InferenceRequest(kind="text", model="m", prompts=("y" * 9, (1, 2, 3)))
    assert estimate_prompt(req) == 3 + 3  # ceil(9 / 4) + three ids


def test_the_backends_count_is_that_estimate() -> None:
    backend = object.__new__(UpstreamBackend)  # count() needs no router
    req = InferenceRequest(kind="chat", model="m", turns=(ChatTurn("user", "z" * 100),))
    assert asyncio.run(backend.count(req)) == estimate_prompt(req) == 25 + 8
