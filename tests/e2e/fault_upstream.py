"""A small OpenAI-compatible upstream that fails on purpose, run as its own process by the tests.

The upstream model name picks the behaviour (each deployment in a test catalog names one):
    ok              answers (streaming or not) with usage
    nousage         answers without any usage
    zerousage       answers with an explicit usage of 0 completion tokens
    bigusage        answers with a usage of 200,000 prompt tokens (more than any hold)
    cached          answers as ok, its usage saying all but 2 prompt tokens came from its
                    prefix cache (`prompt_tokens_details.cached_tokens`, as vLLM reports it)
    fail500         HTTP 500
    bad400          HTTP 400 with an OpenAI error envelope (the client's fault)
    auth401         HTTP 401 (the gateway's key was rejected)
    busy429         HTTP 429 with retry-after: 1
    hang            never answers
    slowfirst       waits 3 s before the first streamed event (or the whole answer)
    resetmid        streams 3 content events, then drops the connection
    slowstream      streams 40 events 50 ms apart (for client-disconnect tests)
    rich            answers with every field OpenAI's chat API (and vLLM / OpenRouter) put
                    beside the text: `audio`, `annotations`, `reasoning_content`,
                    `reasoning_details`, logprobs with `refusal: []`, vLLM's `stop_reason`
                    (fault_rich.py)
`POST /control {"override": "<mode>" | null}` makes every request behave as one mode;
`GET /stats` counts requests per mode, finished streams and streams the client abandoned.

    python -m tests.e2e.fault_upstream PORT [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from tests.e2e import fault_rich

WORDS = ["Hello", " from", " the", " fault", " upstream", "."]
BIG_PROMPT = 200_000  # "bigusage": reports far more prompt tokens than any hold bound
UNCACHED = 2  # "cached": prompt tokens its prefix cache did not serve

stats: Counter[str] = Counter()
state: dict[str, Any] = {"override": None, "delay": 0.0}


def usage(prompt: int, completion: int, mode: str = "ok") -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if mode == "cached":
        out["prompt_tokens_details"] = {"cached_tokens": prompt - UNCACHED}
    return out


def prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) + 4 for m in body["messages"])
    return len(str(body.get("prompt", "")).split()) + 1


def chunk(body: dict[str, Any], text: str | None, finish: str | None) -> dict[str, Any]:
    chat = "messages" in body
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish}
        if text is not None:
            choice["delta"] = {"content": text}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
    return {
        "id": "upstream-id",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [choice],
    }


async def models(_: web.Request) -> web.Response:
    stats["probe"] += 1
    if state["override"] in ("fail500", "hang"):
        return web.json_response({"error": {"message": "down"}}, status=500)
    return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model"}]})


async def control(request: web.Request) -> web.Response:
    state["override"] = (await request.json()).get("override")
    return web.json_response({"override": state["override"]})


async def get_stats(_: web.Request) -> web.Response:
    return web.json_response(dict(stats))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    mode = state["override"] or body.get("model", "ok")
    stats[mode] += 1
    stats["auth:" + request.headers.get("authorization", "none")] += 1
    if state["delay"]:
        await asyncio.sleep(state["delay"])
    if mode == "fail500":
        return web.json_response({"error": {"message": "upstream exploded"}}, status=500)
    if mode == "bad400":
        error = {"message": "upstream says: bad 'messages'", "type": "invalid_request_error"}
        error.update({"param": "messages", "code": "bad_thing"})
        return web.json_response({"error": error}, status=400)
    if mode == "auth401":
        return web.json_response({"error": {"message": "bad key"}}, status=401)
    if mode == "busy429":
        headers = {"retry-after": "1"}
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers=headers)
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "slowfirst":
        await asyncio.sleep(3)
    if mode == "rich" and "messages" in body:
        return await fault_rich.reply(request, body, usage(prompt_tokens(body), 4))
    prompt = BIG_PROMPT if mode == "bigusage" else prompt_tokens(body)
    words = WORDS * 7 if mode == "slowstream" else WORDS
    if not body.get("stream"):
        return answer(body, mode, prompt, words)
    return await stream(request, body, mode, prompt, words)


def answer(body: dict[str, Any], mode: str, prompt: int, words: list[str]) -> web.Response:
    text = "".join(words)
    if "messages" in body:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
        obj = "text_completion"
    out: dict[str, Any] = {
        "id": "upstream-id",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [choice],
    }
    if mode != "nousage":
        out["usage"] = usage(prompt, 0 if mode == "zerousage" else len(words), mode)
    return web.json_response(out)


async def stream(
    request: web.Request, body: dict[str, Any], mode: str, prompt: int, words: list[str]
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)

    async def send(item: dict[str, Any] | str) -> None:
        data = item if isinstance(item, str) else orjson.dumps(item).decode()
        await resp.write(f"data: {data}\n\n".encode())

    try:
        if "messages" in body:
            first = chunk(body, None, None)
            first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            await send(first)
        for i, word in enumerate(words):
            if mode == "resetmid" and i == 3:
                assert request.transport is not None
                await asyncio.sleep(0.1)  # let what was written reach the gateway first
                request.transport.abort()  # the connection drops mid-stream
                stats["reset"] += 1
                return resp
            if mode == "slowstream":
                await asyncio.sleep(0.05)
            await send(chunk(body, word, None))
        await send(chunk(body, None, "stop"))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and mode != "nousage":
            completion = 0 if mode == "zerousage" else len(words)
            tail = chunk(body, None, None)
            tail["choices"] = []
            tail["usage"] = usage(prompt, completion, mode)
            await send(tail)
        await send("[DONE]")
        stats["finished"] += 1
    except (ConnectionResetError, asyncio.CancelledError):
        stats["abandoned"] += 1
        raise
    return resp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    state["delay"] = args.delay
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/control", control)
    app.router.add_get("/stats", get_stats)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
