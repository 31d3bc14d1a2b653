"""POST /v1/embeddings: the request schema and the response body, as OpenAI has them.

`input` is a string, a list of strings, a token array or a list of token arrays; none may be
empty, and at most 2,048 inputs per request. `encoding_format` "float" (the default) gives each
vector as a JSON array; "base64" as the base64 of its little-endian float32 bytes (what the
official SDKs ask for by default, and decode).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field

from tokendock.errors import InvalidRequest
from tokendock.protocol.bounds import (
    ModelField,
    UserField,
    check_text_total,
    utf8_len,
)

MAX_INPUTS = 2048
SPECIAL_TOKENS = 2  # a text's [CLS] and [SEP] (or BOS/EOS): each input's bound adds them

TokenIds = list[Annotated[int, Field(ge=0)]]


class EmbeddingRequest(BaseModel):
    """Unknown fields are accepted and ignored, as on the other endpoints."""

    model_config = ConfigDict(strict=True, extra="ignore")
    list_bounds: ClassVar[dict[str, int]] = {"input": MAX_INPUTS}

    model: ModelField
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None
    user: UserField | None = None

    def check(self) -> None:
        """Counts and emptiness, which pydantic's per-branch errors cannot name well."""
        given = self.input
        if isinstance(given, list) and not given:
            raise InvalidRequest("'input' must not be an empty list.", param="input")
        inputs = self.inputs()
        if len(inputs) > MAX_INPUTS:
            raise InvalidRequest(
                f"Invalid 'input': {len(inputs)} inputs; at most {MAX_INPUTS} are allowed per "
                "request.",
                param="input",
            )
        for i, item in enumerate(inputs):
            if len(item) == 0:
                what = "a string" if isinstance(item, str) else "a token array"
                where = "" if len(inputs) == 1 else f" (input {i})"
                raise InvalidRequest(
                    f"Invalid 'input': {what} must not be empty{where}.", param="input"
                )
        check_text_total(inputs, "input")

    def inputs(self) -> list[str | list[int]]:
        """One entry per input: text, or token ids."""
        given = self.input
        if isinstance(given, str):
            return [given]
        if given and all(isinstance(x, int) for x in given):
            return [list(given)]  # type: ignore[arg-type]
        return list(given)  # type: ignore[arg-type]

    def input_bounds(self) -> list[int]:
        """Per input, an upper bound on its tokens from its size alone: a WordPiece or BPE
        tokenizer makes at most one token per UTF-8 byte, plus the special tokens around it."""
        return [
            utf8_len(p) + SPECIAL_TOKENS if isinstance(p, str) else len(p) for p in self.inputs()
        ]


def embedding_body(
    model: str,
    vectors: Sequence[npt.NDArray[np.float32]],
    prompt_tokens: int,
    encoding: str,
) -> dict[str, Any]:
    """The response body (for orjson): float32 values written as float32, in their shortest
    form, or base64 of their little-endian bytes."""
    if encoding == "base64":
        rendered: list[Any] = [
            base64.b64encode(v.astype("<f4", copy=False).tobytes()).decode("ascii") for v in vectors
        ]
    else:
        rendered = [
            orjson.Fragment(orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY)) for v in vectors
        ]
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": value}
            for i, value in enumerate(rendered)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
