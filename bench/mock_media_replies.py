"""What bench/mock_media.py answers, in OpenAI's and vLLM's shapes, deterministic for a given
request (tests can compute it again), and the WAV files the tests and the bench upload."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
import zlib
from typing import Any

CREATED = 1_700_000_000  # every answer's `created`: the same bytes for the same request
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


# -- WAV ------------------------------------------------------------------------------------


def wav_bytes(seconds: float, rate: int = 16_000, seed: int = 0) -> bytes:
    """A 16-bit mono PCM WAV file of `seconds` (noise from `seed`: every byte differs)."""
    data = random.Random(seed).randbytes(2 * round(seconds * rate))
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)),
            b"WAVE",
            b"fmt ",
            struct.pack("<I", len(fmt)),
            fmt,
            b"data",
            struct.pack("<I", len(data)),
            data,
        ]
    )


def wav_seconds(head: bytes) -> float | None:
    """The length of the WAV file that starts with `head` (its `fmt ` and `data` chunk
    headers), or None when `head` is no WAV header."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(head):
            byte_rate = struct.unpack("<I", head[pos + 16 : pos + 20])[0]
        elif chunk == b"data":
            return size / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


# -- audio ----------------------------------------------------------------------------------


def _usage(kind: str | None, seconds: float, text: str) -> dict[str, Any] | None:
    if kind is None:
        return None
    if kind == "token_usage":
        audio, words = max(1, math.ceil(seconds * 10)), len(text.split())
        return {
            "type": "tokens",
            "input_tokens": audio,
            "input_token_details": {"audio_tokens": audio, "text_tokens": 0},
            "output_tokens": words,
            "total_tokens": audio + words,
        }
    return {"type": "duration", "seconds": round(seconds, 3)}


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    hours, minutes, secs = ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms % 1000:03d}"


def transcription_reply(
    *,
    task: str,
    filename: str,
    seconds: float,
    response_format: str,
    stream: bool,
    usage: str | None,
) -> tuple[str, list[bytes]]:
    """(content type, the chunks to write) of a transcription or translation. `usage`: None
    (none reported), "token_usage" (tokens), anything else (seconds)."""
    text = f"Mock {task} of {filename}: {seconds:.3f} seconds of audio."
    used = _usage(usage, seconds, text)
    if stream:
        words = text.split(" ")
        events: list[dict[str, Any]] = [
            {"type": "transcript.text.delta", "delta": w + (" " if i < len(words) - 1 else "")}
            for i, w in enumerate(words)
        ]
        done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
        if used is not None:
            done["usage"] = used
        chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in [*events, done]]
        return "text/event-stream", chunks
    end = _clock(seconds, ",")
    if response_format == "text":
        return "text/plain; charset=utf-8", [f"{text}\n".encode()]
    if response_format == "srt":
        return "text/plain; charset=utf-8", [f"1\n00:00:00,000 --> {end}\n{text}\n\n".encode()]
    if response_format == "vtt":
        vtt = f"WEBVTT\n\n00:00:00.000 --> {_clock(seconds, '.')}\n{text}\n\n"
        return "text/plain; charset=utf-8", [vtt.encode()]
    doc: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":  # the length as `duration`, no usage (as whisper-1)
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text}
        doc = {"task": task, "language": "english", "duration": seconds, **doc}
        doc["segments"] = [{**segment, "tokens": [1, 2, 3], "temperature": 0.0}]
    elif used is not None:
        doc["usage"] = used
    return "application/json", [json.dumps(doc).encode()]


def speech_audio(text: str, fmt: str) -> bytes:
    """The mock's speech for `text`: 1 KiB per 10 characters (at least 1 KiB), derived from
    the text and format (the same request, the same bytes)."""
    size = 1024 * max(1, math.ceil(len(text) / 10))
    return hashlib.shake_256(f"{fmt}:{text}".encode()).digest(size)


def speech_content_type(fmt: str) -> str:
    return SPEECH_TYPES.get(fmt, "application/octet-stream")


# -- images, moderations, rerank, score ----------------------------------------------------


def _png() -> bytes:
    """A valid 1×1 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x20\x80\xc0")
    body = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


PNG = _png()
PNG_B64 = base64.b64encode(PNG).decode()


def image_reply(doc: dict[str, Any], model: str | None, *, tokens: bool) -> dict[str, Any]:
    """`n` images (a form's `n` is a string) as b64_json, or URLs when asked."""
    n = int(doc.get("n") or 1)
    if not 1 <= n <= 128:
        raise ValueError("n must be 1..128")
    as_url = doc.get("response_format") == "url"
    item = {"url": f"http://mock.invalid/{model}/image.png"} if as_url else {"b64_json": PNG_B64}
    reply: dict[str, Any] = {"created": CREATED, "data": [dict(item) for _ in range(n)]}
    if tokens:
        words = len(str(doc.get("prompt", "")).split())
        reply["usage"] = {
            "input_tokens": words,
            "output_tokens": 272 * n,
            "total_tokens": words + 272 * n,
        }
    return reply


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list):  # multimodal parts: one input
        return [" ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))]
    raise TypeError("input must be a string, a list of strings or a list of parts")


def moderation_reply(doc: dict[str, Any], model: str) -> dict[str, Any]:
    """One result per input; an input with "kill" in it is flagged for violence."""
    results = []
    for text in _inputs(doc["input"]):
        flagged = "kill" in text.lower()
        results.append(
            {
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in CATEGORIES},
                "category_scores": {
                    c: 0.9 if flagged and c == "violence" else 0.001 for c in CATEGORIES
                },
                "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
            }
        )
    digest = hashlib.sha256(json.dumps(doc["input"]).encode()).hexdigest()[:24]
    return {"id": f"modr-{digest}", "model": model, "results": results}


def _tokens(text: str) -> int:
    return len(text.split()) + 1


def _relevance(query: str, text: str) -> float:
    asked = set(query.lower().split())
    return round(len(asked & set(text.lower().split())) / (len(asked) or 1), 6)


def rerank_reply(doc: dict[str, Any], model: str | None) -> dict[str, Any]:
    """vLLM's /v1/rerank: the documents by relevance (shared words), `top_n` of them."""
    query = str(doc["query"])
    texts = [d if isinstance(d, str) else str(d["text"]) for d in doc["documents"]]
    ranked = sorted(range(len(texts)), key=lambda i: (-_relevance(query, texts[i]), i))
    top_n = int(doc.get("top_n") or len(texts))
    results = [
        {"index": i, "document": {"text": texts[i]}, "relevance_score": _relevance(query, texts[i])}
        for i in ranked[:top_n]
    ]
    used = sum(_tokens(query) + _tokens(t) for t in texts)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"rerank-{digest}",
        "model": model,
        "usage": {"total_tokens": used},
        "results": results,
    }


def score_reply(doc: dict[str, Any], model: str | None) -> dict[str, Any]:
    """vLLM's /v1/score: text_1 against each text_2 (or pairwise for two lists)."""
    first = _inputs(doc["text_1"])
    second = _inputs(doc["text_2"])
    if len(first) == 1:
        pairs = [(first[0], t) for t in second]
    elif len(first) == len(second):
        pairs = list(zip(first, second, strict=True))
    else:
        raise ValueError("text_1 and text_2 differ in length")
    data = [
        {"index": i, "object": "score", "score": _relevance(a, b)} for i, (a, b) in enumerate(pairs)
    ]
    used = sum(_tokens(a) + _tokens(b) for a, b in pairs)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"score-{digest}",
        "object": "list",
        "created": CREATED,
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": used, "total_tokens": used, "completion_tokens": 0},
    }
