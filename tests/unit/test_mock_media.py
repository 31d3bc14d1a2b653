"""bench/mock_media.py, in process, driven by the official openai SDK directly: its answers
parse as OpenAI's types, and it records what it received (multipart parsed for real: each
file's size and sha256), so the gateway tests can compare both ends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from aiohttp.test_utils import TestServer
from bench.mock_media import make_app
from bench.mock_media_replies import PNG, speech_audio, wav_bytes, wav_seconds


@pytest.fixture
async def mock() -> AsyncIterator[str]:
    server = TestServer(make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
async def sdk(mock: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=mock + "/v1", api_key="sk-up", max_retries=0)
    yield client
    await client.close()


async def received(mock: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        result: list[dict[str, Any]] = (await http.get(mock + "/_received")).json()
        return result


async def set_mode(mock: str, mode: str | None, seconds: float | None = None) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(mock + "/_mode", json={"mode": mode, "seconds": seconds})
        reply.raise_for_status()


def test_wav_header_gives_the_length() -> None:
    wav = wav_bytes(2.5, rate=8000)
    assert wav_seconds(wav[:64]) == 2.5
    assert wav_seconds(b"ID3\x00" * 20) is None
    assert len(wav) == 44 + 2 * 8000 * 2.5


async def test_transcription_formats_and_recording(mock: str, sdk: openai.AsyncOpenAI) -> None:
    wav = wav_bytes(1.25)
    plain = await sdk.audio.transcriptions.create(model="w", file=("a.wav", wav, "audio/wav"))
    assert "1.250 seconds" in plain.text
    assert plain.usage is not None and plain.usage.type == "duration"
    assert plain.usage.seconds == 1.25
    text = await sdk.audio.transcriptions.create(model="w", file=wav, response_format="text")
    assert isinstance(text, str) and text.startswith("Mock transcribe")
    verbose = await sdk.audio.translations.create(
        model="w", file=("b.wav", wav), response_format="verbose_json"
    )
    assert verbose.duration == 1.25 and verbose.text.startswith("Mock translate of b.wav")
    [first, _, third] = await received(mock)
    assert (first["path"], first["model"], first["complete"]) == (
        "/v1/audio/transcriptions",
        "w",
        True,
    )
    [f] = first["files"]
    assert (f["name"], f["filename"], f["content_type"]) == ("file", "a.wav", "audio/wav")
    assert (f["size"], f["sha256"]) == (len(wav), hashlib.sha256(wav).hexdigest())
    assert first["authorization"] == "Bearer sk-up"
    assert third["fields"]["response_format"] == "verbose_json"
    assert first["order"].index("model") != first["order"].index("file")


async def test_transcription_stream_and_modes(mock: str, sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.audio.transcriptions.create(
        model="w", file=("a.mp3", b"ID3" + bytes(500)), stream=True
    )
    events = [event async for event in stream]
    assert {e.type for e in events[:-1]} == {"transcript.text.delta"}
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert "".join(getattr(e, "delta", "") for e in events[:-1]) == done.text
    assert done.usage is not None and done.usage.model_dump()["seconds"] == 1.0  # no WAV
    await set_mode(mock, "token_usage", seconds=3.0)
    tokens = await sdk.audio.transcriptions.create(model="w", file=("a.mp3", b"ID3"))
    assert tokens.usage is not None and tokens.usage.type == "tokens"
    assert tokens.usage.input_tokens == 30 and tokens.usage.output_tokens > 0
    await set_mode(mock, "no_usage")
    bare = await sdk.audio.transcriptions.create(model="w", file=("a.wav", wav_bytes(0.5)))
    assert bare.usage is None
    await set_mode(mock, "fail")
    with pytest.raises(openai.InternalServerError):
        await sdk.audio.transcriptions.create(model="w", file=("a.wav", wav_bytes(0.5)))
    assert (await received(mock))[-1]["complete"] is False


async def test_speech_images_moderations(mock: str, sdk: openai.AsyncOpenAI) -> None:
    async with sdk.audio.speech.with_streaming_response.create(
        model="tts", voice="alloy", input="Hello there, this is a test."
    ) as speech:
        assert speech.headers["content-type"] == "audio/mpeg"
        audio = await speech.read()
    assert audio == speech_audio("Hello there, this is a test.", "mp3") and len(audio) == 3072
    images = await sdk.images.generate(model="img", prompt="a red dot", n=3)
    assert images.data is not None and len(images.data) == 3
    assert images.data[0].b64_json is not None
    edit = await sdk.images.edit(model="img", image=("dot.png", PNG, "image/png"), prompt="blue")
    assert edit.data is not None and len(edit.data) == 1
    mod = await sdk.moderations.create(input=["hello", "I will kill it"])
    assert [r.flagged for r in mod.results] == [False, True]
    records = await received(mock)
    assert records[-2]["files"][0]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert records[-2]["fields"]["prompt"] == "blue"
    assert records[-1]["model"] is None and records[-1]["json"]["input"][0] == "hello"
    assert records[0]["response"]["size"] == 3072


async def test_rerank_and_score(mock: str) -> None:
    async with httpx.AsyncClient(base_url=mock) as http:
        rerank = await http.post(
            "/v1/rerank",
            json={
                "model": "r",
                "query": "red apple",
                "documents": ["a blue car", {"text": "a red apple"}, "red"],
                "top_n": 2,
            },
        )
        score = await http.post(
            "/v1/score", json={"model": "r", "text_1": "red apple", "text_2": ["red", "car"]}
        )
        cleared = await http.delete("/_received")
    doc = rerank.json()
    assert [r["index"] for r in doc["results"]] == [1, 2]
    assert doc["results"][0]["document"] == {"text": "a red apple"}
    # per pair: the query's and the document's words, +1 each
    assert doc["usage"]["total_tokens"] == 3 * 3 + 4 + 4 + 2
    scores = score.json()
    assert [d["score"] for d in scores["data"]] == [0.5, 0.0]
    assert scores["usage"]["prompt_tokens"] == 3 + 2 + 3 + 2
    assert cleared.json() == [] and json.loads(cleared.text) == []
