"""Uploads to the pass-through routes beyond the SDK's happy path: a multipart body whose `model`
comes after the file (spooled, then sent), a client that goes away mid-upload (the hold is
released, nothing billed), a file over the model's bound (413), an upstream that reports no
usage (the seconds read from the WAV header, marked estimated) and one that fails (nothing
billed); on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import socket
import time
from typing import Any

import httpx
import openai
import pytest
from bench.mock_media_replies import wav_bytes

from tests.e2e.media import (
    HOLD_SECONDS,
    PER_UNIT,
    MediaMock,
    balance,
    billed,
    fresh_mock,
    gateway,
    mock,
    request_ids,
    upstream_saw,
    wait_balance,
)
from tests.e2e.server import Server
from tests.e2e.upstreams import usage_row

__all__ = ["fresh_mock", "gateway", "mock"]  # the fixtures, used by name

BOUNDARY = "td-media-test-7f3a9c"
WAV = wav_bytes(2.3, seed=2)  # billed as 3 seconds


def form(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body of (name, value, filename) parts, in this order."""
    out = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        if filename:
            head += "Content-Type: audio/wav\r\n"
        out.append(head.encode() + b"\r\n" + value + b"\r\n")
    return b"".join(out) + f"--{BOUNDARY}--\r\n".encode()


def upload(gateway: Server, model: str, audio: bytes, *, model_first: bool) -> httpx.Response:
    file_part = ("file", audio, "talk.wav")
    model_part = ("model", model.encode(), None)
    parts = [model_part, file_part] if model_first else [file_part, model_part]
    return httpx.post(
        gateway.v1 + "/audio/transcriptions",
        content=form(parts),
        headers={
            "Authorization": f"Bearer {gateway.key}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
        timeout=60,
    )


def test_model_after_the_file(gateway: Server, mock: MediaMock) -> None:
    """The gateway spools the file until it knows the model, then sends it whole."""
    before = balance(gateway)
    reply = upload(gateway, "whisper-1", WAV, model_first=False)
    assert reply.status_code == 200, reply.text
    assert reply.json()["text"].startswith("Mock transcribe of talk.wav: 2.300 seconds")
    record = mock.last("/v1/audio/transcriptions")
    upstream_saw(record, "whisper-1")
    [file] = record["files"]
    assert (file["size"], file["sha256"]) == (len(WAV), hashlib.sha256(WAV).hexdigest())
    billed(
        gateway,
        before,
        reply.headers["x-request-id"],
        quantity=3,
        unit="second",
        endpoint="audio.transcriptions",
    )


@pytest.mark.parametrize("model_first", [True, False])
def test_no_usage_is_estimated_from_the_wav_header(
    gateway: Server, mock: MediaMock, model_first: bool
) -> None:
    mock.mode("no_usage")
    before = balance(gateway)
    reply = upload(gateway, "whisper-1", WAV, model_first=model_first)
    assert reply.status_code == 200, reply.text
    assert "usage" not in reply.json()
    billed(
        gateway,
        before,
        reply.headers["x-request-id"],
        quantity=3,
        unit="second",
        endpoint="audio.transcriptions",
        estimated=True,
    )


@pytest.mark.parametrize("model_first", [True, False])
def test_file_over_the_bound_is_413(gateway: Server, mock: MediaMock, model_first: bool) -> None:
    """whisper-capped takes 1 MiB at most: 1.5 MiB is a 413, nothing billed, no usage row."""
    before, seen = balance(gateway), request_ids(gateway)
    audio = wav_bytes(49.0)  # 1.57 MB
    try:
        reply = upload(gateway, "whisper-capped", audio, model_first=model_first)
    except httpx.TransportError as exc:  # the gateway may close before the body is all sent
        pytest.fail(f"no 413 answer before the connection closed: {exc!r}")
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["message"]
    assert wait_balance(gateway, before) == before
    assert request_ids(gateway) == seen
    assert all(r["complete"] is False for r in mock.received())  # never a whole 1.5 MB upload


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("model_first", [True, False])
def test_disconnect_mid_upload_releases_the_hold(
    gateway: Server, mock: MediaMock, model_first: bool
) -> None:
    """Half a 4 MB upload, then the client closes its socket: the balance comes back whole and
    no usage row is written. With the model first the hold (max_audio_seconds × price) is
    taken while the upload streams to the upstream, whose request is then cut short too."""
    before, seen = balance(gateway), request_ids(gateway)
    audio = wav_bytes(125.0)
    parts = [("file", audio, "talk.wav"), ("model", b"whisper-1", None)]
    body = form(parts[::-1] if model_first else parts)
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        f"Authorization: Bearer {gateway.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    try:
        sock.sendall(head + body[: len(body) // 2])
        if model_first:
            hold = HOLD_SECONDS * PER_UNIT["second"]
            assert wait_for(lambda: balance(gateway) == before - hold), balance(gateway)
            assert wait_for(lambda: bool(mock.received())), "nothing reached the upstream"
        else:
            time.sleep(0.5)  # the gateway is spooling the half it got
    finally:
        sock.close()
    assert wait_balance(gateway, before) == before
    assert request_ids(gateway) == seen
    if model_first:
        assert wait_for(lambda: mock.received()[-1]["error"] is not None), mock.received()
    assert not any(r["complete"] for r in mock.received())


def test_upstream_failure_bills_nothing(gateway: Server, mock: MediaMock) -> None:
    """The upstream answers 500 before reading the body: an error envelope, the hold released,
    no usage billed."""
    mock.mode("fail")
    before = balance(gateway)
    oai = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as err:
        oai.audio.transcriptions.create(model="whisper-1", file=("talk.wav", WAV))
    assert err.value.status_code in (502, 503), err.value
    assert isinstance(err.value.body, dict) and err.value.body.get("message")
    assert wait_balance(gateway, before) == before
    assert mock.received() and mock.received()[-1]["response"]["status"] == 500


def test_upstream_down_is_an_envelope(gateway: Server) -> None:
    """A deployment nobody listens on: 502/503 with an error envelope, nothing billed (the
    request's usage row, as for chat, says `error` and costs nothing)."""
    before, seen = balance(gateway), request_ids(gateway)
    reply = upload(gateway, "whisper-down", WAV, model_first=True)
    assert reply.status_code in (502, 503), reply.text
    assert reply.json()["error"]["message"]
    assert wait_balance(gateway, before) == before
    assert request_ids(gateway) - seen <= {reply.headers["x-request-id"]}
    if request_ids(gateway) != seen:
        row = usage_row(gateway, reply.headers["x-request-id"])
        assert (row["status"], row["cost_micro_credits"]) == ("error", 0), row
