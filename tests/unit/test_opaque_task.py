"""An opaque body (pass-through front doors: audio, images, rerank) declares its task; only a
model whose catalog task is that one takes it — a chat model refuses it, and an opaque request
never reaches a backend that would parse it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from tokendock.errors import InvalidRequest
from tokendock.inference.backend import InferenceRequest, Opaque
from tokendock.services.pipeline import _check_task


async def _no_chunks(model: str) -> AsyncIterator[bytes]:
    yield b"RIFF"


def _backend(task: str) -> Any:
    return SimpleNamespace(spec=SimpleNamespace(task=task))


def _audio(model: str = "whisper") -> InferenceRequest:
    body = Opaque("transcription", "/audio/transcriptions", "multipart/form-data", _no_chunks)
    return InferenceRequest(kind="opaque", model=model, opaque=body)


def test_an_opaque_body_needs_a_model_of_its_task() -> None:
    with pytest.raises(InvalidRequest) as refused:
        _check_task(_backend("generation"), _audio("gemma"))
    assert refused.value.param == "model"
    assert refused.value.code == "model_not_supported"
    assert "'transcription'" in refused.value.message
    _check_task(_backend("transcription"), _audio())  # the model of that task takes it


def test_an_opaque_kind_without_a_body_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        _check_task(_backend("generation"), InferenceRequest(kind="opaque", model="gemma"))


def test_chat_and_embeddings_keep_their_rules() -> None:
    _check_task(_backend("generation"), InferenceRequest(kind="chat", model="gemma"))
    with pytest.raises(InvalidRequest):
        _check_task(_backend("embedding"), InferenceRequest(kind="chat", model="e5"))
    with pytest.raises(InvalidRequest):
        _check_task(_backend("generation"), InferenceRequest(kind="embed", model="gemma"))
