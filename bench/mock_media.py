"""A recording media upstream: OpenAI's (and vLLM's) audio, image, moderation, rerank and score
routes, for the pass-through tests (tests/e2e/test_media_*.py) and the transcription point of
bench/gateway.py.

    .venv/bin/python -m bench.mock_media --port 0      # first stdout line: {"port": P, "pid": N}

Routes under /v1: `audio/transcriptions` and `audio/translations` (multipart, parsed as a
stream: each file's size and sha256, never held in memory), `audio/speech`, `images/generations`,
`images/edits` (multipart), `moderations`, `rerank` (vLLM's Cohere/Jina shape), `score` (vLLM),
`GET models`. The answers' shapes and content are in bench/mock_media_replies.py.

What it received is recorded per request (the last 100): path, content type, the form fields in
their order, each file's part name / filename / content type / size / sha256, a small JSON body,
`model`, the upstream Authorization header, whether the body was read whole, and the status,
content type, size and sha256 of the bytes it answered. `GET /_received` lists them (oldest
first), `DELETE /_received` clears them.

`POST /_mode {"mode": M, "seconds": S}` switches its behaviour until the next switch:
`no_usage` (no `usage` in any answer), `fail` (500 before reading the body), `slow_read` (reads
the body 64 KiB every 20 ms: a client can disconnect mid-upload), `token_usage` (transcriptions
report input/output tokens instead of seconds); null: normal. `seconds` is the audio length
reported for a file that is no WAV (a request's `x-mock-seconds` header wins).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from bench.mock_media_replies import (
    image_reply,
    moderation_reply,
    rerank_reply,
    score_reply,
    speech_audio,
    speech_content_type,
    transcription_reply,
    wav_seconds,
)

MODES = {"no_usage", "fail", "slow_read", "token_usage"}
KEEP = 100  # requests remembered
JSON_KEPT = 16_384  # a JSON body larger than this is recorded by size and hash only
CHUNK = 65_536
SLOW_READ_PAUSE_S = 0.02
HEADER_BYTES = 4096  # of each file, kept to read a WAV header
MODELS = ("openai/whisper-large-v3", "tts-1", "dall-e-2", "omni-moderation-latest", "bge-rerank")


@dataclass
class State:
    """What the mock received (the last KEEP requests) and its mode."""

    received: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP))
    mode: dict[str, Any] = field(default_factory=lambda: {"mode": None, "seconds": None})


STATE = web.AppKey("state", State)


def _record(request: web.Request) -> dict[str, Any]:
    """A new record of `request`, kept at once: a body that never arrives whole still shows."""
    record: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "content_type": request.headers.get("Content-Type", ""),
        "authorization": request.headers.get("Authorization"),
        "fields": {},
        "order": [],
        "files": [],
        "json": None,
        "model": None,
        "complete": False,
        "error": None,
        "response": None,
    }
    request.app[STATE].received.append(record)
    return record


async def _pause(request: web.Request) -> None:
    if request.app[STATE].mode.get("mode") == "slow_read":
        await asyncio.sleep(SLOW_READ_PAUSE_S)


async def _read_file(request: web.Request, part: BodyPartReader) -> dict[str, Any]:
    """One file part read as a stream: its size, sha256 and first bytes."""
    digest, size, head = hashlib.sha256(), 0, b""
    while chunk := await part.read_chunk(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if len(head) < HEADER_BYTES:
            head += chunk[: HEADER_BYTES - len(head)]
        await _pause(request)
    return {
        "name": part.name,
        "filename": part.filename,
        "content_type": part.headers.get("Content-Type"),
        "size": size,
        "sha256": digest.hexdigest(),
        "wav_seconds": wav_seconds(head),
    }


async def _read_form(request: web.Request, record: dict[str, Any]) -> None:
    """The multipart body, part by part, into `record` (fields, order, files, model)."""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a nested multipart: not in these APIs
            raise web.HTTPBadRequest(text="nested multipart")
        record["order"].append(part.name)
        if part.filename is not None:
            record["files"].append(await _read_file(request, part))
            continue
        value = (await part.read()).decode("utf-8", "replace")
        fields = record["fields"]
        if part.name in fields:  # a repeated field (timestamp_granularities[], image[] …)
            old = fields[part.name]
            fields[part.name] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            fields[part.name] = value
    record["model"] = record["fields"].get("model")
    record["complete"] = True


async def _read_json(request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    raw = b""
    while chunk := await request.content.read(CHUNK):
        raw += chunk
        await _pause(request)
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    record["json"] = body if len(raw) <= JSON_KEPT else {"size": len(raw)}
    record["model"] = body.get("model")
    record["complete"] = True
    return body


async def _body(request: web.Request, record: dict[str, Any]) -> dict[str, Any] | None:
    """Read the body into `record`: the JSON object, or None for a multipart form. A body cut
    short (the client went away) is recorded with its error and re-raised."""
    try:
        if request.content_type.startswith("multipart/"):
            await _read_form(request, record)
            return None
        return await _read_json(request, record)
    except BaseException as exc:  # recorded whatever it is (a reset, a cut multipart …)
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise


def _answered(record: dict[str, Any], status: int, content_type: str, data: bytes) -> None:
    record["response"] = {
        "status": status,
        "content_type": content_type,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _reply(record: dict[str, Any], status: int, content_type: str, data: bytes) -> web.Response:
    _answered(record, status, content_type, data)
    return web.Response(status=status, body=data, headers={"Content-Type": content_type})


def _json(record: dict[str, Any], doc: dict[str, Any], status: int = 200) -> web.Response:
    return _reply(record, status, "application/json", json.dumps(doc).encode())


def _failed(record: dict[str, Any]) -> web.Response:
    doc = {"error": {"message": "mock failure (mode fail)", "type": "server_error"}}
    return _json(record, doc, 500)


async def _stream(
    request: web.Request, record: dict[str, Any], content_type: str, chunks: list[bytes]
) -> web.StreamResponse:
    """`chunks` as a chunked response, one write each (what was written is recorded)."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
        await asyncio.sleep(0)
    await resp.write_eof()
    _answered(record, 200, content_type, b"".join(chunks))
    return resp


async def audio_text(request: web.Request) -> web.StreamResponse:
    """Transcriptions and translations: json, text, srt, vtt, verbose_json, or an SSE stream."""
    record = _record(request)
    mode = request.app[STATE].mode
    if mode.get("mode") == "fail":
        return _failed(record)
    await _body(request, record)
    fields = record["fields"]
    files = record["files"]
    if not files or not record["model"]:
        return _json(record, {"error": {"message": "file and model are required"}}, 400)
    header = request.headers.get("x-mock-seconds")
    seconds = files[0]["wav_seconds"]
    if seconds is None:
        seconds = float(header) if header else float(mode.get("seconds") or 1.0)
    content_type, chunks = transcription_reply(
        task="translate" if request.path.endswith("translations") else "transcribe",
        filename=files[0]["filename"] or "audio",
        seconds=seconds,
        response_format=str(fields.get("response_format") or "json"),
        stream=str(fields.get("stream", "false")).lower() == "true",
        usage=None if mode.get("mode") == "no_usage" else str(mode.get("mode") or "duration"),
    )
    if len(chunks) == 1:
        return _reply(record, 200, content_type, chunks[0])
    return await _stream(request, record, content_type, chunks)


async def speech(request: web.Request) -> web.StreamResponse:
    """Audio bytes for `input`, 1 KiB per 10 characters, streamed in 4 KiB chunks."""
    record = _record(request)
    if request.app[STATE].mode.get("mode") == "fail":
        return _failed(record)
    body = await _body(request, record) or {}
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return _json(record, {"error": {"message": "input is required", "param": "input"}}, 400)
    fmt = str(body.get("response_format") or "mp3")
    audio = speech_audio(text, fmt)
    chunks = [audio[i : i + 4096] for i in range(0, len(audio), 4096)]
    return await _stream(request, record, speech_content_type(fmt), chunks)


async def json_route(request: web.Request) -> web.StreamResponse:
    """Images (generations as JSON, edits as multipart), moderations, rerank and score."""
    record = _record(request)
    mode = request.app[STATE].mode.get("mode")
    if mode == "fail":
        return _failed(record)
    body = await _body(request, record)
    doc = body if body is not None else record["fields"]
    route = request.path.removeprefix("/v1/")
    try:
        if route.startswith("images/"):
            reply = image_reply(doc, record["model"], tokens=mode == "token_usage")
        elif route == "moderations":
            reply = moderation_reply(doc, record["model"] or "omni-moderation-latest")
        elif route == "rerank":
            reply = rerank_reply(doc, record["model"])
        else:
            reply = score_reply(doc, record["model"])
    except (KeyError, TypeError, ValueError) as exc:
        return _json(record, {"error": {"message": f"bad request: {exc}"}}, 400)
    if mode == "no_usage":
        reply.pop("usage", None)
    return _json(record, reply)


async def models(request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "owned_by": "mock-media", "created": 0} for m in MODELS]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def received(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        request.app[STATE].received.clear()
    return web.json_response(list(request.app[STATE].received))


async def set_mode(request: web.Request) -> web.Response:
    if request.method == "POST":
        doc = await request.json()
        mode = doc.get("mode")
        if mode is not None and mode not in MODES:
            raise web.HTTPBadRequest(text=f"mode must be one of {sorted(MODES)} or null")
        request.app[STATE].mode.clear()
        request.app[STATE].mode.update({"mode": mode, "seconds": doc.get("seconds")})
    return web.json_response(request.app[STATE].mode)


def make_app() -> web.Application:
    """The mock as an aiohttp application (in-process tests; `main()` serves it)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = State()
    app.router.add_post("/v1/audio/transcriptions", audio_text)
    app.router.add_post("/v1/audio/translations", audio_text)
    app.router.add_post("/v1/audio/speech", speech)
    for path in ("images/generations", "images/edits", "moderations", "rerank", "score"):
        app.router.add_post(f"/v1/{path}", json_route)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_route("GET", "/_received", received)
    app.router.add_route("DELETE", "/_received", received)
    app.router.add_route("GET", "/_mode", set_mode)
    app.router.add_route("POST", "/_mode", set_mode)
    return app


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; the first stdout line names the port."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(asyncio.CancelledError):
        await stop
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
