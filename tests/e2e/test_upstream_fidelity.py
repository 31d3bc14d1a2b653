"""Upstream fidelity, end to end through the official openai SDK: a gateway in front of the fault
upstream's "rich" mode (tests/e2e/fault_rich.py), which answers with `audio`, `annotations`,
`reasoning_content`, `reasoning_details`, logprobs with `refusal: []` and vLLM's `stop_reason`.
Every one of them reaches the client as the upstream sent it, streamed and whole. (The embedded
engine's `refusal: []`: tests/integration/test_tool_call_cut.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e import fault_rich
from tests.e2e.server import Server, start_server
from tests.e2e.upstreams import Upstream, model_entry, start_fault

MODEL = "up-rich"
MESSAGES: Any = [{"role": "user", "content": "say hello"}]


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault-rich"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(fault: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("gateway-rich")
    catalog = workdir / "models.toml"
    deployment = {"name": "rich", "base_url": fault.v1, "model": "rich"}
    catalog.write_text(model_entry(MODEL, [deployment]))
    srv = start_server(workdir, {"TOKENDOCK_MODELS_FILE": str(catalog)})
    yield srv
    srv.stop()


@pytest.fixture
def oai(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30)


def test_a_streamed_answer_keeps_every_field(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
    )
    reasoning, text, tokens = "", "", []
    audio = annotations = stop_reason = finish = refusals = None
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.model_dump()["choices"]:  # as sent, extra fields included
            delta = choice["delta"]
            reasoning += delta.get("reasoning_content") or ""
            text += delta.get("content") or ""
            audio = delta.get("audio") or audio
            annotations = delta.get("annotations") or annotations
            if choice["logprobs"] is not None:
                tokens += [e["token"] for e in choice["logprobs"]["content"] or []]
                refusals = choice["logprobs"]["refusal"]
            if choice["finish_reason"]:
                finish = choice["finish_reason"]
                stop_reason = choice.get("stop_reason")
    assert reasoning == "".join(fault_rich.REASONING)
    assert text == "".join(fault_rich.TEXT) and tokens == fault_rich.TEXT
    assert refusals == []  # an empty list, not null
    assert audio == fault_rich.AUDIO and annotations == fault_rich.ANNOTATIONS
    assert (finish, stop_reason) == ("stop", fault_rich.STOP_REASON)
    assert usage is not None and usage.completion_tokens == 4


def test_a_whole_answer_keeps_every_field(oai: openai.OpenAI) -> None:
    answer = oai.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)
    choice: Any = answer.choices[0]
    message: Any = choice.message
    assert message.content == "".join(fault_rich.TEXT)
    assert message.reasoning_content == "".join(fault_rich.REASONING)
    assert message.reasoning_details == fault_rich.DETAILS
    assert message.audio is not None and message.audio.model_dump() == fault_rich.AUDIO
    assert [a.model_dump() for a in message.annotations or []] == fault_rich.ANNOTATIONS
    assert choice.logprobs is not None and choice.logprobs.refusal == []
    assert [e.token for e in choice.logprobs.content or []] == fault_rich.TEXT
    assert (choice.finish_reason, choice.stop_reason) == ("stop", fault_rich.STOP_REASON)
