"""What a pass-through answer says it used, and how long an uploaded audio file is.

`Reading` watches an answer's bytes as they are relayed: a JSON body is kept (up to KEEP
bytes) and parsed at the end; server-sent events are scanned line by line and an event that
mentions `usage` is parsed. The result is the answer's `usage` object (OpenAI's, vLLM's or
Cohere's shape), a transcription's `duration` and the number of entries in `data` (images).
Anything else — audio bytes, plain text, subtitles — is relayed untouched and says nothing.

`audio_seconds(head, size)` estimates an audio file's length from its first bytes and its
size, for a transcription whose upstream reported none (the usage row is then `estimated`):
WAV and FLAC headers give it exactly, an MP3 frame header its bitrate; any other format is
counted at 128 kbit/s.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson

KEEP = 8 * 1024 * 1024  # of a JSON answer, kept to read its usage (images' base64 fits)
LINE = 1024 * 1024  # one server-sent event line at most (longer ones are not read)
FALLBACK_BYTES_PER_SECOND = 16_000  # 128 kbit/s


class Reading:
    def __init__(self, content_type: str | None):
        kind = (content_type or "").split(";", 1)[0].strip().lower()
        self.json = kind == "application/json"
        self.sse = kind == "text/event-stream"
        self._kept = bytearray()
        self._whole = True  # the JSON body was kept whole
        self._line = bytearray()
        self.usage: dict[str, Any] | None = None
        self.duration: float | None = None
        self.entries: int | None = None

    def take(self, piece: bytes) -> None:
        if self.json:
            if len(self._kept) + len(piece) <= KEEP:
                self._kept += piece
            else:
                self._whole = False
        elif self.sse:
            self._scan(piece)

    def _scan(self, piece: bytes) -> None:
        start = 0
        while (end := piece.find(b"\n", start)) >= 0:
            if len(self._line) + end - start <= LINE:
                self._line += piece[start:end]
                self._event_line(bytes(self._line))
            self._line.clear()
            start = end + 1
        if len(self._line) + len(piece) - start <= LINE:
            self._line += piece[start:]

    def _event_line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        try:
            item = orjson.loads(line[5:].strip())
        except orjson.JSONDecodeError:
            return
        if isinstance(item, dict):
            self._read(item)

    def finish(self) -> None:
        """The answer ended: read the kept JSON body (a large one: call it off the loop)."""
        if self.json and self._whole and self._kept:
            try:
                body = orjson.loads(self._kept)
            except orjson.JSONDecodeError:
                return
            finally:
                self._kept = bytearray()
            if isinstance(body, dict):
                self._read(body)

    @property
    def kept(self) -> int:
        return len(self._kept)

    def _read(self, body: dict[str, Any]) -> None:
        usage = body.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        duration = body.get("duration")
        if isinstance(duration, int | float) and _number(duration):
            self.duration = float(duration)
        data = body.get("data")
        if isinstance(data, list):
            self.entries = len(data)

    def seconds(self) -> int | None:
        """Audio seconds the upstream reported, rounded up."""
        usage = self.usage or {}
        seconds = usage.get("seconds") if usage.get("type", "duration") == "duration" else None
        if isinstance(seconds, int | float) and _number(seconds):
            return math.ceil(seconds)
        return None if self.duration is None else math.ceil(self.duration)

    def tokens(self) -> tuple[int, int] | None:
        """(input, output) tokens the upstream reported: OpenAI's input/output or prompt/
        completion tokens, or a total alone (rerank, score) as input."""
        usage = self.usage
        if usage is None:
            return None
        given = _count(usage.get("input_tokens"), usage.get("prompt_tokens"))
        out = _count(usage.get("output_tokens"), usage.get("completion_tokens"))
        if given is None:
            given = _count(usage.get("total_tokens"))
            out = 0 if given is not None else out
        if given is None and out is None:
            billed = usage.get("billed_units")  # Cohere's rerank
            if isinstance(billed, dict):
                given = _count(billed.get("input_tokens"), billed.get("search_units"))
        if given is None and out is None:
            return None
        return given or 0, out or 0


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _count(*values: object) -> int | None:
    for value in values:
        if _number(value):
            return math.ceil(float(value))  # type: ignore[arg-type]
    return None


def audio_seconds(head: bytes, size: int) -> int:
    """An audio file's length in whole seconds (rounded up), from its first bytes and size."""
    seconds = _wav(head, size) or _flac(head) or _mp3(head, size)
    if seconds is None:
        seconds = size / FALLBACK_BYTES_PER_SECOND
    return max(1, math.ceil(seconds))


def _wav(head: bytes, size: int) -> float | None:
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at, rate = 12, 0
    while at + 8 <= len(head):
        name, length = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
        if name == b"fmt " and at + 16 <= len(head):
            rate = struct.unpack_from("<I", head, at + 16)[0]  # bytes per second
        elif name == b"data":
            if rate <= 0:
                return None
            data: int = min(length, max(0, size - at - 8))  # streamed WAVs say 0xFFFFFFFF
            return data / int(rate)
        at += 8 + length + (length & 1)
    return None


def _flac(head: bytes) -> float | None:
    if len(head) < 42 or head[:4] != b"fLaC":
        return None
    info = head[8:42]  # STREAMINFO, always the first metadata block
    packed = int.from_bytes(info[10:18], "big")
    rate = packed >> 44
    samples = packed & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


MP3_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def _mp3(head: bytes, size: int) -> float | None:
    at = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # skip the ID3v2 tag
        at = 10 + int.from_bytes(bytes(b & 0x7F for b in head[6:10]), "big")
    while (at := head.find(b"\xff", at)) >= 0 and at + 4 <= len(head):
        if head[at + 1] & 0xFE == 0xFA:  # a frame's sync: MPEG-1 Layer III
            index = head[at + 2] >> 4
            if 0 < index < len(MP3_BITRATES):
                return (size - at) * 8 / (MP3_BITRATES[index] * 1000)
        at += 1
    return None
