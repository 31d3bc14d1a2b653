"""Structural bounds on what a request may carry, checked before any work that grows with it.

Every bound here is cheap to check (counts and lengths of what pydantic already parsed), so a
request that breaks one costs microseconds and gets a 400 that names the field. Bounds on
stored strings match the columns that keep them (storage/tables.py), so settlement can never
fail on data the request carried, on SQLite and PostgreSQL alike.

| what                                         | at most   |
|----------------------------------------------|-----------|
| messages in a chat request                   | 2,048     |
| content parts in one message                 | 256       |
| prompts in a legacy completions request      | 2,048     |
| choices (prompts × n) in one request         | 128       |
| characters of text over all messages/prompts | 1,048,576 |
| token ids over all prompts                   | 262,144   |
| characters of one stop sequence              | 256       |
| characters of `user`, a message's `name`     | 256       |
| entries in `logit_bias`                      | 1,024     |
| characters of `model`                        | 200       |

The request body itself is bounded by TOKENDOCK_MAX_BODY_BYTES (4 MiB by default) in the
middleware, before it is parsed; protocol/screen.py then refuses NaN / Infinity, nesting past
64 levels, and NUL or lone surrogates in any string, on every route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field

from tokendock.errors import InvalidRequest

MAX_MESSAGES = 2048
MAX_CONTENT_PARTS = 256
MAX_PROMPTS = 2048
MAX_CHOICES = 128
MAX_TEXT_CHARS = 1_048_576
MAX_TOKEN_IDS = 262_144


def check_text_total(items: Sequence[str | Sequence[int]], param: str) -> None:
    """Texts and token-id lists of one request, all together, within MAX_TEXT_CHARS characters
    or MAX_TOKEN_IDS ids (a 400 naming `param`)."""
    chars = sum(len(p) for p in items if isinstance(p, str))
    ids = sum(len(p) for p in items if not isinstance(p, str))
    if chars > MAX_TEXT_CHARS or ids > MAX_TOKEN_IDS:
        raise InvalidRequest(
            f"Invalid '{param}': at most {MAX_TEXT_CHARS} characters or {MAX_TOKEN_IDS} "
            "token ids in all are allowed.",
            param=param,
        )


MAX_STOP_CHARS = 256
MAX_USER_CHARS = 256
MAX_NAME_CHARS = 256
MAX_LOGIT_BIAS = 1024
MAX_MODEL_CHARS = 200

# Prompt-token bounds from bytes: a byte-level tokenizer (BPE with byte fallback, as every
# GGUF model has) emits at most one token per UTF-8 byte of text, plus what the chat template
# adds around each message and a few tokens of its own (BOS, the assistant's opening).
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_PROMPT = 16

UserField = Annotated[str, Field(max_length=MAX_USER_CHARS)]
NameField = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
ModelField = Annotated[str, Field(min_length=1, max_length=MAX_MODEL_CHARS)]
StopText = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


def utf8_len(text: str) -> int:
    """UTF-8 bytes of `text` (lone surrogates from JSON escapes count as 3 bytes each)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def precheck_lists(body: object, lists: Mapping[str, int]) -> None:
    """A 400 for a top-level list field longer than its bound, before full validation:
    `body` is what orjson already parsed (protocol/screen.py), where validating 100,000
    union-typed items would cost far more than counting them. Bodies that are not a JSON
    object are left to the schema's own error."""
    if not isinstance(body, dict):
        return
    for name, limit in lists.items():
        value = body.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise InvalidRequest(
                f"Invalid '{name}': {len(value)} items; at most {limit} are allowed.", param=name
            )
