"""Fields shared by /v1/chat/completions and /v1/completions, validated as OpenAI does."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokendock.errors import InvalidRequest
from tokendock.protocol.bounds import MAX_LOGIT_BIAS, ModelField, StopText, UserField

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
MAX_TOKEN_ID_DIGITS = 10  # vocabularies are far below 10^10 tokens


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False


class SamplingFields(BaseModel):
    """Unknown fields are accepted and ignored: SDK users send extras through `extra_body`."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: ModelField
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: StopText | list[StopText] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[str, int | float], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    user: UserField | None = None

    @field_validator("stop")
    @classmethod
    def _stop_rules(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            if any(s == "" for s in value):
                raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_rules(cls, value: dict[str, int | float] | None) -> dict[str, int | float] | None:
        if value is None:
            return None
        for key, bias in value.items():
            # ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() refuses.
            if not (key.isascii() and key.isdigit()) or len(key) > MAX_TOKEN_ID_DIGITS:
                raise ValueError(f"keys must be token ids (integers as strings), got '{key}'")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {key} must be between -100 and 100")
        return value

    def check(self) -> None:
        """Is the request well formed? Each endpoint's schema adds its own rules."""
        self.check_common()

    def check_common(self) -> None:
        """Rules across fields, which pydantic's per-field errors cannot name well."""
        if self.stream_options is not None and self.stream is not True:
            raise InvalidRequest(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None or self.stop == "":
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def logit_bias_ids(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in (self.logit_bias or {}).items()}


def usage_dict(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; `cached`: of the prompt tokens, those read from a KV cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


NO_USAGE: Any = object()  # `usage` left out of a body (a stream chunk the client asked none for)


def response_body(
    object_name: str,
    *,
    response_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None = NO_USAGE,
) -> dict[str, Any]:
    """What every completion-style body and chunk shares; `usage` None is sent as null (a chunk
    of a stream that asked for usage), NO_USAGE leaves the field out."""
    body: dict[str, Any] = {
        "id": response_id,
        "object": object_name,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if usage is not NO_USAGE:
        body["usage"] = usage
    return body
