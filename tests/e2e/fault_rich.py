"""The fault upstream's "rich" mode (tests/e2e/fault_upstream.py): a chat answer carrying every
field OpenAI's chat API defines beside the text — `audio`, `annotations`, logprobs with their
`refusal` list — and the reasoning fields vLLM, SGLang and OpenRouter send
(`reasoning_content`, `reasoning_details`), plus vLLM's choice-level `stop_reason`; whole, or
streamed as such servers stream them. The tests compare what the client got with these."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

TEXT = ["Hi", " there"]
REASONING = ["Let me ", "think."]
AUDIO = {"id": "audio_abc", "data": "UklGRiQAAABXQVZF", "transcript": "Hi there", "expires_at": 1}
ANNOTATIONS = [
    {
        "type": "url_citation",
        "url_citation": {
            "url": "https://example.com/a",
            "title": "A",
            "start_index": 0,
            "end_index": 2,
        },
    }
]
DETAILS = [{"type": "reasoning.text", "text": "Let me think.", "format": "unknown", "index": 0}]
STOP_REASON = 106  # vLLM: the token id (or stop string) that ended the answer


def entry(token: str) -> dict[str, Any]:
    raw = list(token.encode())
    return {"token": token, "logprob": -0.25, "bytes": raw, "top_logprobs": []}


def logprobs(tokens: list[str]) -> dict[str, Any]:
    return {"content": [entry(t) for t in tokens], "refusal": []}


def whole(body: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": "".join(TEXT),
        "refusal": None,
        "audio": AUDIO,
        "annotations": ANNOTATIONS,
        "reasoning_content": "".join(REASONING),
        "reasoning_details": DETAILS,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": logprobs(TEXT),
        "finish_reason": "stop",
        "stop_reason": STOP_REASON,
    }
    return envelope(body, "chat.completion", [choice]) | {"usage": usage}


def deltas() -> list[dict[str, Any]]:
    """The stream's choices, in order: reasoning, text with logprobs, audio and annotations,
    the end."""
    out: list[dict[str, Any]] = [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    for piece in REASONING:
        out.append({"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None})
    for token in TEXT:
        out.append(
            {
                "index": 0,
                "delta": {"content": token},
                "logprobs": logprobs([token]),
                "finish_reason": None,
            }
        )
    out.append(
        {
            "index": 0,
            "delta": {"audio": AUDIO, "annotations": ANNOTATIONS},
            "finish_reason": None,
        }
    )
    out.append({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": STOP_REASON})
    return out


def envelope(body: dict[str, Any], obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "upstream-rich",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": choices,
    }


async def reply(
    request: web.Request, body: dict[str, Any], usage: dict[str, Any]
) -> web.StreamResponse:
    if not body.get("stream"):
        return web.json_response(whole(body, usage))
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    items = [envelope(body, "chat.completion.chunk", [c]) for c in deltas()]
    if (body.get("stream_options") or {}).get("include_usage"):
        items.append(envelope(body, "chat.completion.chunk", []) | {"usage": usage})
    for item in items:
        await resp.write(b"data: " + orjson.dumps(item) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp
