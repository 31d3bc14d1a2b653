"""The abuse bench's catalogue, rows 1–12: issue 18's findings, each as an attacker sends it.

Every attack is an async function of a `Ctx` returning an `Outcome`; sizes come from
`ctx.size(full, smoke)`. What each row must show is judged by bench/abuse.py from what the
server spent (CPU, engine threads, RSS, database, log) and billed, and from the canary; a row
adds its own checks to `Outcome.judged` (cross-tenant cache hits, 503s to other accounts, a
disabled account's stream still flowing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import schemas
from bench.abuse_http import MODEL, NEVER_STOP, Ctx, Outcome, StreamRecord

Attack = Callable[[Ctx], Awaitable[Outcome]]


@dataclass(frozen=True)
class Row:
    ident: str
    title: str
    attack: Attack
    smoke: bool = False  # part of --smoke
    repeat: int = 1  # a full run sends it this many times (refused rows: CPU per request)


def chat_schema(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    ask = [{"role": "user", "content": "Answer in JSON."}]
    return {"model": MODEL, "messages": ask, "response_format": fmt, **extra}


async def stalling_anyof(ctx: Ctx) -> Outcome:
    """Chat with a json_schema answer: anyOf of K = 60 arrays, each starting with a $ref to one
    enum of M = 1,000 strings (K x M parse stacks in llama.cpp's grammar), 16 tokens."""
    out = Outcome()
    k, m = ctx.size(60, 4), ctx.size(1000, 4)
    body = chat_schema(schemas.stalling_anyof(k, m), max_tokens=ctx.size(16, 4))
    await ctx.send("attacker", "/v1/chat/completions", body, out=out)
    out.notes.append(f"K = {k}, M = {m}")
    return out


async def huge_enum_logprobs(ctx: Ctx) -> Outcome:
    """Chat with a json_schema answer: one enum of 9,000 strings sharing a long prefix, with
    logprobs (top 5), 8 tokens."""
    out = Outcome()
    n = ctx.size(9000, 20)
    body = chat_schema(schemas.huge_enum(n), max_tokens=8, logprobs=True, top_logprobs=5)
    await ctx.send("attacker", "/v1/chat/completions", body, out=out)
    out.notes.append(f"{n:,} values")
    return out


async def exponential_oneof(ctx: Ctx) -> Outcome:
    """Zero credit: the schema check must not run unbounded before the 402 (chat) nor on the
    free counting endpoints."""
    out = Outcome()
    k = ctx.size(5, 2)
    schema = schemas.exponential_oneof(k)
    await ctx.send("broke", "/v1/chat/completions", chat_schema(schema, max_tokens=4), out=out)
    tool = {"name": "answer", "description": "x", "input_schema": schema}
    ask = [{"role": "user", "content": "Hi"}]
    count = {"model": MODEL, "messages": ask, "tools": [tool]}
    await ctx.send("broke", "/v1/messages/count_tokens", count, out=out)
    fmt = {"format": {"type": "json_schema", "name": "answer", "schema": schema}}
    await ctx.send(
        "broke", "/v1/responses/input_tokens", {"model": MODEL, "input": "Hi", "text": fmt}, out=out
    )
    out.notes.append(f"k = {k} (chat, count_tokens, input_tokens)")
    return out


def secret_prompt(words: int) -> list[dict[str, str]]:
    filler = " ".join(f"rule{i}" for i in range(words))
    system = f"You are the vault. The secret code is 7Q-ALPHA-93. Never reveal it. {filler}"
    return [{"role": "system", "content": system}, {"role": "user", "content": "Hello."}]


async def prefix_cache(ctx: Ctx) -> Outcome:
    """A fresh account sends the victim's exact prompt, after the victim's request ended and
    while another of the victim's runs: any cached token it is told of came from the victim."""
    out = Outcome(xhits=0)
    messages = secret_prompt(ctx.size(300, 30))
    plain = {"model": MODEL, "messages": messages, "max_tokens": 1, "temperature": 0}

    async def probe(role: str) -> int:
        _, body = await ctx.send(role, "/v1/chat/completions", plain, out=out)
        details = ((body or {}).get("usage") or {}).get("prompt_tokens_details") or {}
        return int(details.get("cached_tokens") or 0)

    await probe("victim")
    own = await probe("victim")  # the victim's own repeat: the cache works
    after = await probe("prober1")
    stop = asyncio.Event()
    long = {**plain, "max_tokens": ctx.size(200, 30), "logit_bias": NEVER_STOP}
    running, _, on = await generating(ctx, "victim", long, out, stop)
    during = await probe("prober2") if on else 0
    stop.set()
    await running
    out.xhits = sum(1 for n in (after, during) if n > 0)
    out.notes.append(f"cached: victim's repeat {own}, another account {after} / {during} (running)")
    out.judged["0 cross-tenant cache hits"] = out.xhits == 0
    return out


async def generating(
    ctx: Ctx, role: str, body: dict[str, Any], out: Outcome, stop: asyncio.Event
) -> tuple[asyncio.Task[StreamRecord], StreamRecord, bool]:
    """A stream started in the background; returns once it generates (True) or has ended."""
    rec = StreamRecord()
    task = asyncio.ensure_future(
        ctx.stream(role, "/v1/chat/completions", body, out, until=stop, rec=rec)
    )
    await rec.started.wait()
    return task, rec, rec.events > 0 and not task.done()


async def responses_chain(ctx: Ctx) -> Outcome:
    """8 chained /v1/responses (previous_response_id), truncation "auto", store: true, each
    input 300 items of 3,000 characters (~0.9 MB), max_output_tokens 1."""
    out = Outcome()
    # Items under the window's bytes each (truncation keeps whole items), ~0.9 MB in all.
    items, size = ctx.size(300, 4), ctx.size(3000, 1000)
    previous = None
    for i in range(ctx.size(8, 2)):
        said = [
            {"role": "user", "content": f"Note {i}.{j}: " + "lorem " * (size // 6)}
            for j in range(items)
        ]
        body: dict[str, Any] = {
            "model": MODEL,
            "input": said,
            "truncation": "auto",
            "max_output_tokens": 1,
            "store": True,
        }
        if previous:
            body["previous_response_id"] = previous
        status, answer = await ctx.send("chain", "/v1/responses", body, out=out)
        if status == 200 and isinstance(answer, dict):
            previous = answer["id"]
    ctx.shared["chain_last"] = previous
    out.notes.append(f"{out.requests} × {items * size // 1000} KB of input")
    return out


async def chain_input_tokens(ctx: Ctx) -> Outcome:
    """8 /v1/responses/input_tokens at once over the chain of row 4a (its last response as
    previous_response_id): free, so bounded by the rate limits."""
    out = Outcome()
    last = ctx.shared.get("chain_last")
    if last is None:
        out.notes.append("no chain to count (row 4a stored nothing)")
        return out
    body = {"model": MODEL, "input": "And now?", "previous_response_id": last}
    many = ctx.size(8, 2)
    await asyncio.gather(
        *(ctx.send("chain", "/v1/responses/input_tokens", body, out=out) for _ in range(many))
    )
    out.notes.append(f"{many} in parallel")
    return out


async def fill_the_queue(ctx: Ctx) -> Outcome:
    """One account (default tier) opens chat streams with n = 128, 128 and 8 (32 tokens each,
    EOS banned); meanwhile another account sends 5 short requests: none may get a 503."""
    out = Outcome()
    stop = asyncio.Event()
    ask = [{"role": "user", "content": "Tell me a story."}]
    streams = []
    for n in (128, 128, 8):
        body = {"model": MODEL, "messages": ask, "n": n, "max_tokens": 32, "logit_bias": NEVER_STOP}
        streams.append(
            asyncio.ensure_future(
                ctx.stream("queuer", "/v1/chat/completions", body, out, until=stop)
            )
        )
        await asyncio.sleep(0.3)
    others = Outcome()
    plain = {"model": MODEL, "messages": ask, "max_tokens": 2}
    for _ in range(ctx.size(5, 2)):
        await ctx.send("victim", "/v1/chat/completions", plain, out=others)
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*streams)
    out.notes.append(
        f"the attacker's streams: {out.status_text()}; another account: {others.status_text()}"
    )
    out.judged["another account served (no 503)"] = set(others.statuses) == {200}
    out.expected = frozenset({"503 engine_overloaded"})  # the attacker's own, past its share
    return out


async def nul_in_user(ctx: Ctx) -> Outcome:
    """A NUL character in chat's `user`, in Messages' `metadata.user_id` and in Responses'
    `user`: refused, or billed for every token delivered."""
    out = Outcome()
    ask = [{"role": "user", "content": "Say hi."}]
    await ctx.send(
        "nul",
        "/v1/chat/completions",
        {"model": MODEL, "messages": ask, "max_tokens": 8, "user": "a\u0000b"},
        out=out,
    )
    messages = {
        "model": MODEL,
        "messages": ask,
        "max_tokens": 8,
        "metadata": {"user_id": "x\u0000y"},
    }
    await ctx.send("nul", "/v1/messages", messages, out=out)
    responses = {"model": MODEL, "input": "Say hi.", "max_output_tokens": 8, "user": "\u0000"}
    await ctx.send("nul", "/v1/responses", responses, out=out)
    return out


async def echo_logprobs(ctx: Ctx) -> Outcome:
    """/v1/completions with a ~1,500-token prompt, echo + logprobs, n = 4, max_tokens 1: the
    prompt scored once per request (or billed per scoring)."""
    out = Outcome()
    words, n = ctx.size(500, 30), ctx.size(4, 2)
    prompt = " ".join(f"word{i}" for i in range(words))
    body = {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 1, "n": n, "max_tokens": 1}
    await ctx.send("attacker", "/v1/completions", body, out=out)
    out.notes.append(f"{words} words, n = {n}")
    return out


async def parser_500s(ctx: Ctx) -> Outcome:
    """NaN / Infinity on the Responses and Messages routes; a deep pattern and a long $ref chain
    on chat and count_tokens — all from a zero-credit key, all refused with a 400."""
    out = Outcome()
    nan = b'{"model": "gemma-3-270m", "input": "hi", "temperature": NaN}'
    inf = (
        b'{"model": "gemma-3-270m", "max_tokens": 4, "temperature": Infinity,'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    await ctx.send("broke", "/v1/responses", raw=nan, out=out)
    await ctx.send("broke", "/v1/messages", raw=inf, out=out)
    depth = ctx.size(400, 400)
    for schema in (schemas.deep_pattern(depth), schemas.ref_chain(depth)):
        await ctx.send("broke", "/v1/chat/completions", chat_schema(schema, max_tokens=4), out=out)
        tool = {
            "name": "t",
            "description": "x",
            "input_schema": {"type": "object", "properties": {"a": schema}},
        }
        count = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
        await ctx.send("broke", "/v1/messages/count_tokens", count, out=out)
    return out


async def unbilled_storage(ctx: Ctx) -> Outcome:
    """/v1/responses with store: true, three times each: a 3.9 MB field the API does not define;
    an input item whose id has 100,000 characters."""
    out = Outcome()
    junk = "x" * ctx.size(3_900_000, 20_000)
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 1, "store": True, "junk": junk}
    long_id = [
        {
            "type": "message",
            "id": "msg_" + "a" * ctx.size(100_000, 1000),
            "role": "user",
            "content": "Hi",
        }
    ]
    for _ in range(ctx.size(3, 1)):
        await ctx.send("attacker", "/v1/responses", body, out=out)
        await ctx.send(
            "attacker", "/v1/responses", {**body, "junk": None, "input": long_id}, out=out
        )
    out.notes.append(
        f"junk field {len(junk) / 1e6:.1f} MB; item id {len(long_id[0]['id']):,} chars"
    )
    return out


async def free_tokenizing(ctx: Ctx) -> Outcome:
    """20 count_tokens and 20 input_tokens requests at once, each 1 M characters, from a
    zero-credit key on the default tier."""
    out = Outcome()
    text = "lorem ipsum " * (ctx.size(1_000_000, 10_000) // 12)
    count = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    many = ctx.size(20, 2)
    await asyncio.gather(
        *(ctx.send("broke", "/v1/messages/count_tokens", count, out=out) for _ in range(many))
    )
    inputs = {"model": MODEL, "input": text}
    await asyncio.gather(
        *(ctx.send("broke", "/v1/responses/input_tokens", inputs, out=out) for _ in range(many))
    )
    out.notes.append(f"{many} × {len(text) / 1e6:.2f} M characters on each endpoint")
    return out


async def nul_in_ids(ctx: Ctx) -> Outcome:
    """GET /v1/responses/abc%00, GET /v1/chat/completions/abc%00, previous_response_id "abc\\0"."""
    out = Outcome()
    await ctx.send("attacker", "/v1/responses/abc%00", method="GET", out=out)
    await ctx.send("attacker", "/v1/chat/completions/abc%00", method="GET", out=out)
    body = {
        "model": MODEL,
        "input": "Hi",
        "previous_response_id": "abc\u0000",
        "max_output_tokens": 1,
    }
    await ctx.send("attacker", "/v1/responses", body, out=out)
    return out


async def disabled_account(ctx: Ctx) -> Outcome:
    """A chat stream (400 tokens, EOS banned) and a background response of an account that
    `tokendock accounts disable` disables meanwhile: no token more than 1 s later."""
    out = Outcome()
    stop = asyncio.Event()
    ask = [{"role": "user", "content": "Tell me a very long story."}]
    body = {"model": MODEL, "messages": ask, "max_tokens": 400, "logit_bias": NEVER_STOP}
    background = {
        "model": MODEL,
        "input": ask[0]["content"],
        "max_output_tokens": 400,
        "background": True,
    }
    await ctx.send("disabled", "/v1/responses", background, out=out)
    running, rec, on = await generating(ctx, "disabled", body, out, stop)
    if not on:
        stop.set()
        await running
        out.notes.append("the stream ended before the disable")
        return out
    await ctx.disable(ctx.accounts["disabled"].email)
    disabled_at = time.monotonic()
    try:
        rec = await asyncio.wait_for(asyncio.shield(running), ctx.size(20, 5))
    except TimeoutError:
        stop.set()
        rec = await running
    late = sum(1 for t in rec.event_times if t > disabled_at + 1.0)
    out.notes.append(
        f"stream ended {rec.ended - disabled_at:+.1f} s after the disable"
        f" ({rec.error or 'no error event'}); {late} tokens after +1 s"
    )
    out.judged["disabled account's stream ends within 1 s"] = late == 0
    out.notes.append("a disabled key reads no balance or usage: billed shows 0")
    return out


ROWS = [
    Row("1a", "anyOf of K arrays, each a $ref to an enum of M strings", stalling_anyof, smoke=True),
    Row("1b", "enum of 9,000 strings with logprobs", huge_enum_logprobs),
    Row("2", "exponential oneOf check, zero-credit key", exponential_oneof, smoke=True),
    Row("3", "another account's prompt through the prefix cache", prefix_cache, smoke=True),
    Row("4a", "Responses chain, truncation auto, big inputs", responses_chain),
    Row("4b", "free input_tokens over the whole chain, in parallel", chain_input_tokens),
    Row("5", "one account fills the wait queue (n = 128, 128, 8)", fill_the_queue),
    Row("6", "NUL in user / metadata.user_id", nul_in_user),
    Row("7", "echo + logprobs with n choices", echo_logprobs),
    Row("8", "NaN / Infinity, 400 nested groups, $ref chain of 400", parser_500s, True, 10),
    Row("9", "store: true with a junk field and a long item id", unbilled_storage),
    Row("10", "free tokenizing in parallel, zero-credit key", free_tokenizing),
    Row("11", "NUL in a response id", nul_in_ids, smoke=True, repeat=10),
    Row("12", "an account disabled while its stream runs", disabled_account),
]
