"""The pass-through routes through the official openai SDK: a TokenDock gateway in front of a
mock upstream that records what it received (bench/mock_media.py). For each route the mock got
the client's body with the deployment's model name and the upstream's key (files byte for byte),
the client got the bytes the mock sent (content type too), and the key's balance dropped by
exactly quantity × price, recorded with the unit and the endpoint; on SQLite and PostgreSQL.
Rerank and score have no SDK method: httpx."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import openai
import pytest
from bench.mock_media_replies import PNG, PNG_B64, speech_audio, wav_bytes

from tests.e2e.media import (
    MediaMock,
    balance,
    billed,
    fresh_mock,
    gateway,
    mock,
    token_billed,
    upstream_saw,
    wait_balance,
)
from tests.e2e.server import Server

__all__ = ["fresh_mock", "gateway", "mock"]  # the fixtures, used by name

WAV = wav_bytes(2.3, seed=1)  # 2.3 s: billed as 3
WAV_SHA = hashlib.sha256(WAV).hexdigest()


@pytest.fixture
def oai(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=60)


def same_bytes(got: bytes, record: dict[str, Any], content_type: str | None = None) -> None:
    """The client got exactly what the mock answered."""
    sent = record["response"]
    assert sent is not None and sent["status"] == 200, record
    assert (len(got), hashlib.sha256(got).hexdigest()) == (sent["size"], sent["sha256"])
    if content_type is not None:
        assert sent["content_type"].startswith(content_type)


def sent_file(record: dict[str, Any], sha: str, filename: str) -> None:
    [file] = [f for f in record["files"] if f["sha256"] == sha]
    assert file["filename"] == filename, record["files"]


def test_transcription_json(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    before = balance(gateway)
    raw = oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("talk.wav", WAV, "audio/wav"), language="en"
    )
    result = raw.parse()
    record = mock.last("/v1/audio/transcriptions")
    upstream_saw(record, "whisper-1")
    sent_file(record, WAV_SHA, "talk.wav")
    assert record["fields"]["language"] == "en"
    same_bytes(raw.content, record, "application/json")
    assert result.text.startswith("Mock transcribe of talk.wav: 2.300 seconds")
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=3,
        unit="second",
        endpoint="audio.transcriptions",
    )


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json"])
def test_transcription_formats(
    gateway: Server, oai: openai.OpenAI, mock: MediaMock, fmt: Any
) -> None:
    """text, srt and vtt come back as text/plain, with no usage in them: the seconds are read from
    the WAV header (estimated); verbose_json bills from its `duration` (reported)."""
    before = balance(gateway)
    raw = oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("talk.wav", WAV), response_format=fmt
    )
    record = mock.last("/v1/audio/transcriptions")
    assert record["fields"]["response_format"] == fmt
    same_bytes(raw.content, record)
    expected = "application/json" if fmt == "verbose_json" else "text/plain"
    assert raw.headers["content-type"].startswith(expected)
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=3,
        unit="second",
        endpoint="audio.transcriptions",
        estimated=fmt != "verbose_json",
    )


def test_transcription_stream(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    """The SSE events as the SDK reads them, and the stream's bytes as the mock wrote them."""
    before = balance(gateway)
    stream = oai.audio.transcriptions.create(model="whisper-1", file=("talk.wav", WAV), stream=True)
    events = list(stream)
    assert events[-1].type == "transcript.text.done"
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text and "2.300 seconds" in deltas
    assert wait_balance(gateway, before - 300) == before - 300
    with oai.audio.transcriptions.with_streaming_response.create(
        model="whisper-1", file=("talk.wav", WAV), stream=True
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        got = resp.read()
        request_id = resp.headers["x-request-id"]
    same_bytes(got, mock.last("/v1/audio/transcriptions"), "text/event-stream")
    billed(
        gateway,
        before - 300,
        request_id,
        quantity=3,
        unit="second",
        endpoint="audio.transcriptions",
    )


def test_translation(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    before = balance(gateway)
    raw = oai.audio.translations.with_raw_response.create(
        model="whisper-1", file=("talk.wav", WAV, "audio/wav"), prompt="a talk"
    )
    assert raw.parse().text.startswith("Mock translate of talk.wav")
    record = mock.last("/v1/audio/translations")
    upstream_saw(record, "whisper-1")
    sent_file(record, WAV_SHA, "talk.wav")
    assert record["fields"]["prompt"] == "a talk"
    same_bytes(raw.content, record)
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=3,
        unit="second",
        endpoint="audio.translations",
    )


def test_transcription_by_the_token(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    """A model priced per token bills the upstream's input and output tokens."""
    mock.mode("token_usage")
    before = balance(gateway)
    raw = oai.audio.transcriptions.with_raw_response.create(
        model="gpt-4o-transcribe", file=("talk.wav", WAV)
    )
    usage = raw.parse().usage
    assert usage is not None and usage.type == "tokens"
    upstream_saw(mock.last("/v1/audio/transcriptions"), "gpt-4o-transcribe")
    token_billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        usage.input_tokens,
        usage.output_tokens,
        "audio.transcriptions",
    )


def test_speech(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    text = "The quick brown fox jumps over the lazy dog, twice over."  # 56 characters
    before = balance(gateway)
    with oai.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, speed=1.25
    ) as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        audio = resp.read()
        request_id = resp.headers["x-request-id"]
    assert audio == speech_audio(text, "mp3")
    record = mock.last("/v1/audio/speech")
    upstream_saw(record, "tts-1")
    assert {k: record["json"][k] for k in ("input", "voice", "speed")} == {
        "input": text,
        "voice": "alloy",
        "speed": 1.25,
    }
    same_bytes(audio, record, "audio/mpeg")
    billed(
        gateway, before, request_id, quantity=len(text), unit="character", endpoint="audio.speech"
    )


def test_speech_over_its_bound(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    before = balance(gateway)
    with pytest.raises(openai.BadRequestError) as err:
        oai.audio.speech.create(model="tts-1", voice="alloy", input="x" * 201)
    assert isinstance(err.value.body, dict) and err.value.body.get("param") == "input"
    assert balance(gateway) == before and mock.received() == []


def test_images_generate(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    before = balance(gateway)
    raw = oai.images.with_raw_response.generate(
        model="dall-e-2", prompt="a red dot", n=3, size="256x256"
    )
    images = raw.parse()
    assert images.data is not None and [d.b64_json for d in images.data] == [PNG_B64] * 3
    record = mock.last("/v1/images/generations")
    upstream_saw(record, "dall-e-2")
    assert (record["json"]["n"], record["json"]["size"]) == (3, "256x256")
    same_bytes(raw.content, record, "application/json")
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=3,
        unit="image",
        endpoint="images.generations",
    )
    with pytest.raises(openai.BadRequestError) as err:
        oai.images.generate(model="dall-e-2", prompt="a red dot", n=5)
    assert isinstance(err.value.body, dict) and err.value.body.get("param") == "n"


def test_images_edit_multipart_intact(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    """Two files and the fields reach the mock whole: the sha256 it computed is the file's."""
    image = PNG + bytes(range(256)) * 1200  # ~300 KB, every byte counts
    mask = PNG
    before = balance(gateway)
    raw = oai.images.with_raw_response.edit(
        model="dall-e-2",
        image=("dot.png", image, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="make it blue",
        n=2,
    )
    images = raw.parse()
    assert images.data is not None and len(images.data) == 2
    record = mock.last("/v1/images/edits")
    upstream_saw(record, "dall-e-2")
    sent_file(record, hashlib.sha256(image).hexdigest(), "dot.png")
    sent_file(record, hashlib.sha256(mask).hexdigest(), "mask.png")
    assert {f["content_type"] for f in record["files"]} == {"image/png"}
    assert (record["fields"]["prompt"], record["fields"]["n"]) == ("make it blue", "2")
    same_bytes(raw.content, record)
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=2,
        unit="image",
        endpoint="images.edits",
    )


def test_moderations(gateway: Server, oai: openai.OpenAI, mock: MediaMock) -> None:
    """Without `model` the catalog's moderation model answers."""
    before = balance(gateway)
    raw = oai.moderations.with_raw_response.create(input=["hello there", "I will kill it"])
    result = raw.parse()
    assert [r.flagged for r in result.results] == [False, True]
    record = mock.last("/v1/moderations")
    upstream_saw(record, "omni-moderation-latest")
    same_bytes(raw.content, record, "application/json")
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        quantity=1,
        unit="request",
        endpoint="moderations",
    )


def post(gateway: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        gateway.v1 + path,
        json=body,
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    )


def test_rerank(gateway: Server, mock: MediaMock) -> None:
    docs = ["a blue car", {"text": "a red apple on a table"}, "red"]
    before = balance(gateway)
    reply = post(
        gateway,
        "/rerank",
        {"model": "bge-rerank", "query": "red apple", "documents": docs, "top_n": 2},
    )
    assert reply.status_code == 200, reply.text
    assert [r["index"] for r in reply.json()["results"]] == [1, 2]
    record = mock.last("/v1/rerank")
    upstream_saw(record, "bge-rerank")
    assert record["json"]["documents"] == docs and record["json"]["top_n"] == 2
    same_bytes(reply.content, record, "application/json")
    used = reply.json()["usage"]["total_tokens"]
    token_billed(gateway, before, reply.headers["x-request-id"], used, 0, "rerank")


def test_score(gateway: Server, mock: MediaMock) -> None:
    before = balance(gateway)
    body = {"model": "bge-rerank", "text_1": "red apple", "text_2": ["red", "blue car"]}
    reply = post(gateway, "/score", body)
    assert reply.status_code == 200, reply.text
    assert [d["score"] for d in reply.json()["data"]] == [0.5, 0.0]
    record = mock.last("/v1/score")
    upstream_saw(record, "bge-rerank")
    assert json.dumps(record["json"]["text_2"]) == json.dumps(body["text_2"])
    same_bytes(reply.content, record, "application/json")
    used = reply.json()["usage"]["prompt_tokens"]
    token_billed(gateway, before, reply.headers["x-request-id"], used, 0, "score")


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemma-embedded", "/audio/transcriptions"),
        ("tts-1", "/audio/transcriptions"),
        ("chat-upstream", "/audio/translations"),
        ("whisper-1", "/audio/speech"),
        ("dall-e-2", "/moderations"),
        ("gemma-embedded", "/rerank"),
    ],
)
def test_wrong_model_names_model(gateway: Server, mock: MediaMock, model: str, path: str) -> None:
    """An embedded or wrong-task model: 400 model_not_supported naming `model`, nothing sent
    upstream, nothing billed."""
    before = balance(gateway)
    headers = {"Authorization": f"Bearer {gateway.key}"}
    if path.startswith("/audio/trans"):
        reply = httpx.post(
            gateway.v1 + path,
            data={"model": model},
            files={"file": ("talk.wav", WAV, "audio/wav")},
            headers=headers,
        )
    else:
        body = {"model": model, "input": "hi", "voice": "alloy", "query": "q", "documents": ["d"]}
        reply = httpx.post(gateway.v1 + path, json=body, headers=headers)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_supported", "model"), error
    assert balance(gateway) == before and mock.received() == []


def test_seconds_round_up(gateway: Server, oai: openai.OpenAI) -> None:
    """0.2 s of audio is billed as one second, 1.0 s as one, 1.01 s as two."""
    for seconds, quantity in ((0.2, 1), (1.0, 1), (1.01, 2)):
        before = balance(gateway)
        raw = oai.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("short.wav", wav_bytes(seconds))
        )
        billed(
            gateway,
            before,
            raw.headers["x-request-id"],
            quantity=quantity,
            unit="second",
            endpoint="audio.transcriptions",
        )
