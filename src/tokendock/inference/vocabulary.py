"""The request vocabulary every backend and front door shares: chat turns and tool calls,
sampling settings, a grammar to follow, a sampled token's logprobs, and the meter that says what
a backend did for one job (billed even when the client left)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the assistant made: `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    penalty_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Grammar:
    """A GBNF grammar the sampled text must follow. With a `trigger`, generation is free until
    the text contains it; from there on the rest must match the grammar (whose root describes
    what follows the trigger) — a lazily applied grammar, e.g. for a tool call in `auto`."""

    text: str
    trigger: str = ""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One sampled token: its text, `raw` bytes and log-probability, and the `top` alternatives
    (text, logprob, bytes), most likely first."""

    token: str
    logprob: float
    raw: bytes
    top: tuple[tuple[str, float, bytes], ...] = ()


@dataclass(slots=True)
class Meter:
    """What the engine did for one job, for billing even when the consumer went away:
    `started` once the prompt is being evaluated, `tokens` sampled so far, and `done` set when
    the engine has stopped working on the job (finished, cancelled, failed or skipped)."""

    started: bool = False
    tokens: int = 0
    cached: int = 0  # prompt tokens whose KV state was reused, not evaluated again
    done: asyncio.Event = field(default_factory=asyncio.Event)
