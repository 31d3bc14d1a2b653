"""The backend seam: one typed request in, typed events out — for every model, wherever it runs.

A public model id maps to one `Backend`: the embedded llama.cpp engine
(inference/engine/embedded.py) or a router over upstream deployments
(inference/upstream/backend.py). Every endpoint's wire adapter produces the same
`InferenceRequest`; every backend answers with the same events:

    Delta(index, text, tool_calls, logprobs)   a piece of choice `index` (`extra`: an upstream's
                                               other fields of it, relayed as they came)
    Finish(index, reason)                      choice `index` ended (exactly one per choice)
    Embedding(index, vector)                   input `index`'s vector (kind "embed" only)

and, when the run is over, a `Tally`: the tokens to bill (exact, or estimated and marked so).

A run has three steps, so the pipeline can admit before anything costly happens:
  1. `bound(req)` — cheap (no tokenizer, no network): the request's worst case in tokens, and a
     400 for what this backend cannot do (naming the field);
  2. `run(req, …).begin()` — after admission: tokenize / route until an upstream commits; may
     raise, and is cancelled when the client leaves;
  3. `Execution.events()` — the answer; closing it early stops the work. `Execution.tally()`
     waits until the backend has stopped working and says what it produced — on every exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest
from tokendock.inference.structured import OutputFormat, ToolUse
from tokendock.inference.vocabulary import ChatTurn, Grammar, Sampling

JSON = dict[str, Any]
Kind = Literal["chat", "text", "embed", "opaque"]


@dataclass(frozen=True, slots=True)
class Features:
    """What a request asks beyond plain text generation. Upstreams get them as sent; a backend
    that cannot do one refuses the request in `bound` (400 naming the field)."""

    logprobs: bool = False
    top_logprobs: int | None = None
    tools: bool = False
    tool_choice: str | None = None  # "none" / "auto" / "required", or "named" for an object
    functions: bool = False
    function_call: str | None = None
    response_format: str | None = None  # its "type"
    output_audio: bool = False
    modalities: tuple[str, ...] | None = None
    prediction: bool = False
    suffix: bool = False
    best_of: int | None = None  # only when it differs from n (text completions)
    function_role: int | None = None  # index of a message with the deprecated 'function' role
    non_text_part: tuple[int, int, str] | None = None  # (message, part, type) of the first one


class Passthrough:
    """The client's own JSON body, for backends that forward it (upstreams): parsed once,
    strictly, only when asked — the embedded engine never pays for it."""

    __slots__ = ("_json", "raw")

    def __init__(self, raw: bytes = b"{}"):
        self.raw = raw
        self._json: JSON | None = None

    def json(self) -> JSON:
        """A fresh copy of the parsed body (NaN, Infinity or numbers out of range: a 400)."""
        if self._json is None:
            self._json = strict_payload(self.raw)
        return dict(self._json)


@dataclass(slots=True)
class FileSeen:
    """An uploaded file as it went by: its first bytes (at most HEAD_BYTES) and its size."""

    HEAD_BYTES = 64 * 1024

    head: bytearray = field(default_factory=bytearray)
    size: int = 0

    def saw(self, piece: bytes) -> None:
        if len(self.head) < self.HEAD_BYTES:
            self.head += piece[: self.HEAD_BYTES - len(self.head)]
        self.size += len(piece)


@dataclass(frozen=True, slots=True)
class Opaque:
    """A body the gateway forwards to an upstream without holding it whole, for pass-through
    front doors (kind "opaque"): audio to transcribe, an image to edit, a rerank query. `task`
    declares what it is — only a model whose catalog task is the same takes it; `path` is the
    upstream's route under its base URL. `body(model)` streams the body with its `model` set
    to the deployment's name, as the client's bytes arrive (`replayable`: it can be sent again
    — held in memory or spooled — so a failed try is retried elsewhere; a live body is retried
    only while none of it went out). `fields` are the scalar fields read before admission
    (the JSON object, or the form's fields before its first file); `file` is what went by of
    the uploaded file (an audio header: the estimate of its length when the upstream reports
    none)."""

    task: str
    path: str
    content_type: str
    body: Callable[[str], AsyncIterator[bytes]]
    fields: Mapping[str, object] = field(default_factory=dict)
    replayable: bool = True
    file: FileSeen = field(default_factory=lambda: FileSeen())


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One normalized request, whatever endpoint it came from.

    `turns` for a conversation (kind "chat"); `prompts` for text completion (each a text or
    token ids), or the inputs to embed (kind "embed", with `dimensions` when asked).
    `max_tokens` is per choice as asked (None: up to the model's cap). `prompt_bytes`
    is the bound the web layer measured (UTF-8 bytes + template overhead, per prompt).
    `payload` is the typed pass-through: the client's own JSON object, which only upstreams use;
    `opaque` (kind "opaque") a streamed body of a declared task that only upstreams forward.
    """

    kind: Kind
    model: str
    turns: tuple[ChatTurn, ...] = ()
    prompts: tuple[str | tuple[int, ...], ...] = ()
    prompt_bytes: tuple[int, ...] = ()
    n: int = 1
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # None: the model's default (the catalog's); 0: no top-k cut
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    echo: bool = False
    user: str | None = None
    stream: bool = False
    include_usage: bool = False
    dimensions: int | None = None
    features: Features = Features()
    tools: ToolUse | None = None  # tools offered (and how they may be used)
    output: OutputFormat | None = None  # response_format json_object / json_schema
    payload: Passthrough = field(default_factory=Passthrough)
    opaque: Opaque | None = None
    # The API it came in by, recorded on its usage row: "chat.completions", "completions",
    # "embeddings", "responses", "messages" … Each wire adapter sets it ("": not recorded).
    endpoint: str = ""
    # A batch line (issue 21): the lowest priority class. The embedded engine gives it a slot
    # only when no interactive request waits and takes that slot back first; an upstream
    # deployment gives batch lines at most its `batch_share` of its concurrency.
    background: bool = False

    @property
    def body_bytes(self) -> int:
        """The whole body's size: an upstream counts tools and schemas as prompt tokens."""
        return len(self.payload.raw)


@dataclass(frozen=True, slots=True)
class Delta:
    index: int
    text: str = ""
    tool_calls: tuple[JSON, ...] | None = None
    logprobs: JSON | None = None
    refusal: str | None = None
    function_call: JSON | None = None  # the deprecated form of a tool call
    # An upstream's other fields of the message / delta (audio, annotations, reasoning_content
    # …), relayed as they came; the embedded engine never makes it (None: nothing more).
    extra: JSON | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    index: int
    reason: str
    stop_sequence: str | None = None  # which of the request's stop sequences ended it, if known
    # An upstream's other fields of the choice beside `finish_reason` (vLLM's `stop_reason` …).
    extra: JSON | None = None


Event = Delta | Finish


@dataclass(frozen=True, slots=True)
class Embedding:
    """The vector of input `index` (float32, as the model or the upstream gave it)."""

    index: int
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of an opaque answer (kind "opaque"), bytes as the upstream sent them; the first
    one carries the answer's `content_type`, which the web layer answers with."""

    data: bytes
    content_type: str | None = None


Output = Event | Embedding | Chunk


@dataclass(frozen=True, slots=True)
class Bound:
    """A request's worst case before any tokenizing: what admission holds credit for.
    `grammar`: backend-private, what `bound` already built for `run` (the embedded engine's
    grammar: made once per request, off the event loop, before admission)."""

    prompt_tokens: int
    completion_tokens: int
    grammar: Grammar | None = None
    # Tokens reserved against the key's tokens-per-minute; None: prompt + completion. A model
    # sold by another unit (audio seconds, images …) reserves none: its units are not tokens.
    rate_tokens: int | None = None


@dataclass(slots=True)
class Tally:
    """What a run produced, to bill: exact counts, or `estimated` ones when an upstream sent
    none. `started`: the backend did any work (a run refused or abandoned before that is not
    billed at all). `finish`: one reason for the request ("mixed" when choices differ)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, those served from a KV cache (prefix caching)
    started: bool = False
    estimated: bool = False
    finish: str | None = None
    deployment: str | None = None
    first_token: float | None = None  # time.monotonic() of the first generated text
    # A model sold by another unit than tokens (catalog `price.unit`): `prompt_tokens` is then
    # the quantity of that unit (audio seconds, characters, images, requests) and it is not
    # counted against tokens-per-minute.
    unit: str | None = None


class Execution(Protocol):
    """One run of one request on a backend (made cheaply; `begin` does the work)."""

    async def begin(self) -> None:
        """What must precede the first event: tokenize; route until an upstream commits. May
        raise (a 400 the tokenizer found, no deployment answered); cancelled when the client
        leaves. `tally()` is right whether or not this finished."""
        ...

    @property
    def prompt_tokens(self) -> int:
        """The prompt's tokens as counted (exact for the embedded engine, once begun)."""
        ...

    def events(self) -> AsyncIterator[Output]:
        """The answer's events. Closing the iterator early (client gone) stops the work."""
        ...

    def abandon(self) -> None:
        """The answer will not be read (the client left before it began): stop the work."""
        ...

    async def tally(self) -> Tally:
        """Once the backend stopped working on the request (awaits it): what it produced."""
        ...


class Backend(Protocol):
    spec: ModelSpec

    def bound(self, req: InferenceRequest) -> Bound:
        """Cheap checks and the worst case; a 400 for what this backend cannot do."""
        ...

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> Execution:
        """A run of `req` (nothing done yet). `owner` is whom the backend is fair between;
        `bound` is what this backend's `bound(req)` returned (None: work it out again)."""
        ...

    async def count(self, req: InferenceRequest) -> int:
        """The input tokens of `req` as this backend's model reads them, generating nothing:
        exact on the embedded engine; upstream, the estimate billing uses when a deployment
        reports no usage (so a count and a bill agree). A 400 the generation would also give
        (a chat template's refusal names `messages`)."""
        ...

    @property
    def ready(self) -> bool: ...

    async def open(self) -> None:
        """Load the model / start probing deployments."""
        ...

    async def close(self) -> None: ...


def default_sampling(spec: ModelSpec, req: InferenceRequest) -> Sampling:
    """The request's sampling over the model's defaults (the catalog's `[sampling]`)."""
    d = spec.sampling
    return Sampling(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=d.top_k if req.top_k is None else req.top_k,
        min_p=d.min_p,
        repeat_penalty=d.repeat_penalty,
        penalty_last_n=d.penalty_last_n,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=None if req.seed is None else req.seed & 0xFFFFFFFF,
        logit_bias=dict(req.logit_bias),
    )


def strict_payload(body: bytes) -> JSON:
    """The body as the upstream gets it, parsed once before admission. Strict JSON (RFC 8259):
    NaN, Infinity or a number out of float range anywhere is a 400, never a failure later."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). The body must be "
            "valid JSON: NaN, Infinity and numbers out of range are not allowed."
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return payload
