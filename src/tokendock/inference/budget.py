"""Completion budgets: how many tokens a choice and a request may generate, per the model's caps
(`max_output_tokens`, `max_request_output_tokens` in the catalog) and its context window.
Shared by the embedded engine and the upstream backends."""

from __future__ import annotations

from tokendock.catalog import ModelSpec
from tokendock.errors import ContextLengthExceeded, InvalidRequest


def per_choice(spec: ModelSpec, requested: int | None, param: str) -> int:
    """Completion tokens one choice may use at most; a 400 above the model's cap."""
    cap = spec.output_cap
    if requested is None:
        return cap
    if requested > cap:
        raise InvalidRequest(
            f"'{param}' is too large: {requested}. This model supports at most {cap} "
            "completion tokens per choice.",
            param=param,
        )
    return requested


def check_request_cap(spec: ModelSpec, per_choice: int, choices: int, n: int, param: str) -> None:
    """One request may not tie up the engine: Σ max_tokens over its choices is capped."""
    cap = spec.request_output_cap
    if per_choice * choices > cap:
        raise InvalidRequest(
            f"This request could generate {per_choice * choices} tokens ({choices} choices × "
            f"{per_choice} max_tokens); this model allows at most {cap} per request. Lower "
            "'n' or 'max_tokens'.",
            param="n" if n > 1 else param,
        )


def completion_budget(
    window: int, prompt_len: int, requested: int | None, cap: int, what: str
) -> int:
    if requested is None:
        if prompt_len >= window:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {window} tokens. However, your "
                f"{what} resulted in {prompt_len} tokens. Please reduce the length of the {what}.",
                param=what,
            )
        return min(cap, window - prompt_len)
    if prompt_len + requested > window:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the {what}, {requested} in the "
            f"completion). Please reduce the length of the {what} or completion.",
            param=what,
        )
    return requested


def not_counted(spec: ModelSpec) -> InvalidRequest:
    """Embedding models have no input tokens to count (/v1/messages/count_tokens and
    /v1/responses/input_tokens are about conversations)."""
    return InvalidRequest(
        f"The model '{spec.id}' is an embedding model: it has no input tokens to count.",
        param="model",
        code="model_not_supported",
    )
