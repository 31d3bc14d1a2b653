"""POST /v1/completions (legacy text completion): request schema and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from tokendock.errors import InvalidRequest
from tokendock.protocol.bounds import (
    MAX_CHOICES,
    MAX_PROMPTS,
    TEMPLATE_TOKENS_PER_PROMPT,
    check_text_total,
    utf8_len,
)
from tokendock.protocol.common import SamplingFields

TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(SamplingFields):
    list_bounds: ClassVar[dict[str, int]] = {"prompt": MAX_PROMPTS}

    # Counts are checked in check_bounds(): a union's length error would name a wrong branch.
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: Annotated[int, Field(ge=0)] = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=20)] | None = None

    def check(self) -> None:
        self.check_common()
        if isinstance(self.prompt, list) and len(self.prompt) == 0:
            raise InvalidRequest("'prompt' must not be an empty list.", param="prompt")
        self.check_bounds()

    def check_bounds(self) -> None:
        """Counts that stay cheap whatever the body: choices, characters and token ids."""
        prompts = self.prompts()
        if len(prompts) > MAX_PROMPTS:
            raise InvalidRequest(
                f"Invalid 'prompt': {len(prompts)} prompts; at most {MAX_PROMPTS} are allowed.",
                param="prompt",
            )
        choices = len(prompts) * max(self.n or 1, self.best_of or 1)
        if choices > MAX_CHOICES:
            raise InvalidRequest(
                f"This request asks for {choices} choices ({len(prompts)} prompts × n); at "
                f"most {MAX_CHOICES} are allowed per request.",
                param="n" if (self.n or 1) > 1 else "prompt",
            )
        for i, p in enumerate(prompts):
            if isinstance(p, list) and not p:
                where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
                raise InvalidRequest(
                    f"Invalid '{where}': a prompt of token ids needs at least one token.",
                    param=where,
                )
        check_text_total(prompts, "prompt")

    def prompt_bounds(self) -> list[int]:
        """Per prompt, an upper bound on its tokens from bytes alone (protocol/bounds.py)."""
        return [
            utf8_len(p) + TEMPLATE_TOKENS_PER_PROMPT if isinstance(p, str) else len(p)
            for p in self.prompts()
        ]

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


def text_choice(
    index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One choice of a text completion, whole or a stream chunk's."""
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
