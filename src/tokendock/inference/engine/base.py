"""The embedded engine's own interface: one choice to generate (`Generation`) in, `TextDelta`
events followed by exactly one `Finished` out; a request's choices all put theirs into the
run's one queue (inbox.py). Stop sequences are the engine's job: a `TextDelta` never contains
one. Closing the reader early (client gone) cancels the generation within one step. The engine
batches many jobs (inference/engine/scheduler.py) behind the `Backend` seam
(inference/backend.py); the service and web layers never see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tokendock.inference.vocabulary import (
    ChatTurn,
    FinishReason,
    Grammar,
    Meter,
    Sampling,
    TokenLogprob,
)

if TYPE_CHECKING:
    from tokendock.inference.engine.inbox import Inbox
    from tokendock.inference.engine.job import Job


@dataclass(eq=False, slots=True)
class PromptScores:
    """The scored prompt tokens (echo + logprobs), shared by the n choices of one prompt of one
    request: the first choice the engine takes scores the prompt, the others reuse these (and
    its KV cells), so the engine's work is the prompt once — what is billed."""

    tokens: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """One choice to generate. `prompt` are token ids, already counted by the caller. `owner`
    (the account) is whom the engine is fair between: round robin between owners, not one FIFO.
    `background` (a batch line): the lowest priority class — a slot only when no interactive
    job waits, the first to give one up, outside the interactive wait bounds."""

    prompt: Sequence[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    meter: Meter = field(default_factory=Meter)
    owner: str = ""
    grammar: Grammar | None = None
    top_logprobs: int | None = None  # None: no logprobs; else how many alternatives (0–20)
    prompt_logprobs: bool = False  # score the prompt's tokens too (PromptScored, first)
    scores: PromptScores | None = None  # shared by the choices of one prompt (scored once)
    background: bool = False


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens whose text this delta completes


@dataclass(frozen=True, slots=True)
class PromptScored:
    """The prompt's tokens with their logprobs (the first has none: nothing precedes it)."""

    tokens: tuple[TokenLogprob, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    completion_tokens: int
    stop_sequence: str | None = None  # the stop sequence that ended it, if one did


Event = TextDelta | PromptScored | Finished


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What the engine is doing now (read without locks: a snapshot, not a transaction).
    `running` and `waiting` count every choice; the `background_` ones, those of batch lines
    (the interactive wait bounds and wait estimate leave them out)."""

    slots: int
    running: int
    waiting: int
    kv_tokens: int  # tokens held in KV cells (prefix cache included)
    kv_capacity: int
    tokens_per_second: float  # recent aggregate generation speed
    seconds_per_job: float  # recent average time a choice held a slot
    generated: int  # all-time counters
    prompt_evaluated: int
    prompt_cached: int
    background_running: int = 0
    background_waiting: int = 0


class Engine(Protocol):
    model_id: str
    tokenize_calls: int  # calls of tokenize / tokenize_chat: prompts that reached the tokenizer
    tokenized_tokens: int
    on_tokenize: Callable[[str], None] | None  # told the model id at each such call

    @property
    def context_length(self) -> int: ...

    @property
    def ready(self) -> bool: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_token_bytes(self) -> int:
        """Bytes of text the longest token stands for (0 while not loaded): a prompt of B
        bytes is at least B / this many tokens."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt text for a conversation, ending with the assistant's turn opened. It
        remembers which stretches are message text (for `tokenize(…, chat=True)`)."""
        ...

    async def tokenize_chat(self, turns: Sequence[ChatTurn]) -> list[int]:
        """`render_chat` + `tokenize(…, chat=True)`, off the event loop for long conversations."""
        ...

    async def tokenize(self, text: str, *, chat: bool) -> list[int]:
        """Exact token ids, in time linear in the text; stops early when the caller is
        cancelled. `chat=True` parses the control tokens the template wrote, never those in
        message text; `chat=False` parses none (the BOS the model wants is added)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def check_grammar(self, text: str) -> bool:
        """Does the engine's grammar parser accept this GBNF grammar?"""
        ...

    def generate(self, job: Generation) -> AsyncIterator[Event]:
        """One job's events (no wait bounds); closing the iterator cancels it."""
        ...

    def submit(
        self, jobs: Sequence[Generation], owner: str, inbox: Inbox | None = None
    ) -> list[Job]:
        """Queue a request's choices, after `check_queue` — atomically (503 when over; batch
        lines, `Generation.background`, go to the background lane unchecked). Choice
        `i` puts its events (or an error) into the run's one `inbox` (new when None), tagged
        `i`."""
        ...

    def cancel(self, job: Job) -> None:
        """Stop a submitted job: out of the queue now, out of its slot within a step."""
        ...

    def check_queue(self, choices: int, owner: str = "") -> None:
        """Raise a 503 (with retry-after) when `choices` more interactive ones would wait
        beyond the bound, or beyond `owner`'s own bound (batch lines are never refused)."""
        ...

    def estimated_wait(self) -> float:
        """Seconds a choice arriving now would wait for a slot (0: one is free)."""
        ...

    def load(self) -> EngineLoad:
        """What the engine is doing now, for /metrics and /ready."""
        ...
