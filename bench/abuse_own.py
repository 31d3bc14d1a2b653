"""The abuse bench's own rows, beyond issue 18's table: the most a schema within the bounds can
cost per step, wide logprobs on many choices, long prompts in parallel, and deep JSON nesting."""

from __future__ import annotations

import asyncio

from bench import schemas
from bench.abuse_http import MODEL, NEVER_STOP, Ctx, Outcome
from bench.abuse_rows import Row, chat_schema


async def worst_accepted_schema(ctx: Ctx) -> Outcome:
    """The schema at every bound the converter accepts; its engine ms per token is compared
    with a plain request's (the issue: at most 20 ms per sampling step)."""
    out = Outcome()
    worst = getattr(schemas, "worst_accepted", None)
    if worst is None:
        out.notes.append("bench/schemas.py has no worst_accepted() yet")
        return out
    body = chat_schema(worst(), max_tokens=ctx.size(48, 4), temperature=1, seed=7)
    await ctx.send("attacker", "/v1/chat/completions", body, out=out)
    ctx.shared["per_step_row"] = True
    return out


async def wide_logprobs(ctx: Ctx) -> Outcome:
    """Chat, n = 8 x 32 tokens (EOS banned), logprobs with top_logprobs 20 on every token."""
    out = Outcome()
    ask = [{"role": "user", "content": "Count to fifty."}]
    body = {
        "model": MODEL,
        "messages": ask,
        "n": ctx.size(8, 2),
        "max_tokens": ctx.size(32, 4),
        "logprobs": True,
        "top_logprobs": 20,
        "logit_bias": NEVER_STOP,
    }
    await ctx.send("attacker", "/v1/chat/completions", body, out=out)
    out.notes.append(f"n = {body['n']}, top_logprobs 20")
    return out


async def long_prompts(ctx: Ctx) -> Outcome:
    """Prefill: the longest prompts the window allows, as many at once as the tier lets in."""
    out = Outcome()
    # ~3,300 tokens (digits are a token each in Gemma's vocabulary: none here), the window 4,096.
    sentences = ctx.size(330, 10)
    text = "The quick brown fox jumps over the lazy dog. " * sentences
    many = ctx.size(4, 2)
    bodies = [
        {"model": MODEL, "messages": [{"role": "user", "content": f"{i} {text}"}], "max_tokens": 1}
        for i in range(many)
    ]
    await asyncio.gather(
        *(ctx.send("attacker", "/v1/chat/completions", b, out=out) for b in bodies)
    )
    out.notes.append(f"{many} × {sentences * 9:,} words")
    return out


async def deep_nesting(ctx: Ctx) -> Outcome:
    """100,000 nested JSON arrays in a body to chat, Messages and Responses (zero-credit key)."""
    out = Outcome()
    depth = ctx.size(100_000, 10_000)
    nested = b"[" * depth + b"]" * depth
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        raw = b'{"model": "gemma-3-270m", "max_tokens": 4, "messages": ' + nested + b"}"
        if path == "/v1/responses":
            raw = b'{"model": "gemma-3-270m", "input": ' + nested + b"}"
        await ctx.send("broke", path, raw=raw, out=out)
    out.notes.append(f"{depth:,} nested arrays")
    return out


OWN_ROWS = [
    Row("13", "own: the worst schema the bounds accept", worst_accepted_schema),
    Row("14", "own: top_logprobs 20 on n choices", wide_logprobs),
    Row("15", "own: the longest prompts, in parallel", long_prompts),
    Row("16", "own: JSON nested 100,000 deep on three routes", deep_nesting, True, 5),
]
