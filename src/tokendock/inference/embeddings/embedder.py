"""An embedding model on llama.cpp: one context in embedding mode, one worker thread.

llama.cpp contexts are not thread-safe, so one thread owns the context (as in llama.py). The
event loop hands it jobs — one request's inputs, already tokenized — through a `FairQueue`
(round robin between accounts). The worker packs inputs into batches: several sequences per
`llama_decode`, each with its own sequence id, up to the catalog's `batch_size` tokens (one
input at least), and reads each sequence's pooled vector (the GGUF's pooling: mean for MiniLM).
Small batches are the fast ones: a non-causal model attends over the whole batch (masked), a
cost that grows with its square — measured on all-MiniLM-L6-v2, 2-4 short sentences (~60
tokens) per decode embed twice as fast per sentence as 32 at once (docs/benchmarks.md).
Vectors are L2-normalized, as OpenAI's are. A long job yields the worker after each batch when
another account is waiting, and a cancelled job stops after the batch under way.

Tokenizing (the vocabulary only, never the context) runs on the event loop for short inputs and
in a thread for long ones; [CLS] and [SEP] are added as the model wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tokendock.catalog import ModelSpec
from tokendock.errors import GenerationFailed, ModelNotReady
from tokendock.inference.fair_queue import FairQueue
from tokendock.inference.vocabulary import Meter
from tokendock.inference.weights.files import LOAD_LOCK, resolve_gguf

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 16_384  # fewer characters over all inputs: tokenized on the loop
Vectors = npt.NDArray[np.float32]


@dataclass(slots=True)
class _Job:
    inputs: Sequence[Sequence[int]]
    owner: str
    out: Vectors
    meter: Meter
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Vectors]
    done_inputs: int = 0
    background: bool = False  # a batch line's: the lowest priority (FairQueue's lane)
    cancelled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> bool:
        """Worker: claim the job unless it was cancelled while queued."""
        with self.lock:
            if self.cancelled.is_set():
                if self.meter.started:
                    self.finish(None)
                return False
            self.meter.started = True
            return True

    def cancel(self) -> None:
        """Event loop: stop the job; one never started is done at once (nothing to bill)."""
        with self.lock:
            self.cancelled.set()
            if not self.meter.started:
                self.meter.done.set()

    def finish(self, outcome: Vectors | BaseException | None) -> None:
        """Worker: the engine is done with the job; hand the loop its vectors or failure."""

        def settle() -> None:
            self.meter.done.set()
            if self.future.done() or outcome is None:
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody listens
            self.loop.call_soon_threadsafe(settle)


class LlamaEmbedder:
    def __init__(self, spec: ModelSpec, data_dir: Path):
        self.model_id = spec.id
        self.spec = spec
        self._data_dir = data_dir
        self._llm: Any = None
        self._llama_cpp: Any = None
        self._jobs: FairQueue[_Job] = FairQueue()
        self._thread: threading.Thread | None = None
        self._dimensions = 0
        self._batch_tokens = 0
        self._max_seqs = 1
        self.model_path: Path | None = None

    @property
    def ready(self) -> bool:
        return self._thread is not None

    @property
    def max_input_tokens(self) -> int:
        return self.spec.context_length

    @property
    def vocab_size(self) -> int:
        return int(self._llm.n_vocab()) if self._llm is not None else 0

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(
            target=self._worker, name=f"embed:{self.model_id}", daemon=True
        )
        self._thread.start()

    def _load(self) -> None:
        import llama_cpp  # imported late: loading the shared library is not free

        self.model_path = resolve_gguf(self.spec.path, self.spec.package, self._data_dir)
        threads = self.spec.threads or os.cpu_count() or 1
        # A decode holds one whole input at least (a non-causal model, BERT, needs each
        # sequence whole in one micro-batch), and several up to `batch_size` tokens.
        size = max(self.spec.batch_size, self.spec.context_length)
        with LOAD_LOCK:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                embedding=True,
                n_ctx=size,
                n_batch=size,
                n_ubatch=size,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        if int(llm.pooling_type()) == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            llm.close()
            raise ValueError(f"{self.model_path}: the GGUF names no pooling (mean, cls, last)")
        self._llm, self._llama_cpp = llm, llama_cpp
        self._dimensions = int(llm.n_embd())
        self._batch_tokens = self.spec.batch_size
        self._max_seqs = int(llm.context_params.n_seq_max)

    async def close(self) -> None:
        if self._thread is not None:
            for job in self._jobs.close():
                job.finish(ModelNotReady(f"The model '{self.model_id}' is shutting down."))
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    # -- tokens ------------------------------------------------------------------------------

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Exact ids per text, with the [CLS] … [SEP] the model wants; control-token text in an
        input stays text."""
        self._require_ready()
        if sum(len(t) for t in texts) < INLINE_TOKENIZE_CHARS:
            return self._tokenize(texts, None)
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._tokenize, texts, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _tokenize(self, texts: Sequence[str], cancel: threading.Event | None) -> list[list[int]]:
        llm = self._llm
        out = []
        for text in texts:
            if cancel is not None and cancel.is_set():
                raise asyncio.CancelledError
            out.append(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        return out

    def _require_ready(self) -> None:
        if self._llm is None:
            raise ModelNotReady(f"The model '{self.model_id}' is still loading; retry shortly.")

    # -- vectors -----------------------------------------------------------------------------

    async def embed(
        self,
        inputs: Sequence[Sequence[int]],
        owner: str,
        meter: Meter,
        *,
        background: bool = False,
    ) -> Vectors:
        """One normalized vector per input (each at most `max_input_tokens` long), in order.
        Cancelling stops the work after the batch under way; `meter.done` is set once the
        engine is done with the job (whatever happened). `background`: a batch line's — it
        runs only when no interactive job waits, and yields to one between its batches."""
        if self._llm is None:
            meter.done.set()
        self._require_ready()
        loop = asyncio.get_running_loop()
        out = np.empty((len(inputs), self._dimensions), dtype=np.float32)
        job = _Job(inputs, owner, out, meter, loop, loop.create_future(), background=background)
        if not self._jobs.put(owner, job, background=background):
            meter.done.set()
            raise ModelNotReady(f"The model '{self.model_id}' is shutting down.")
        try:
            return await job.future
        finally:
            job.cancel()

    def _worker(self) -> None:
        while (job := self._jobs.get(skip=lambda queued: not queued.start())) is not None:
            try:
                finished = self._run(job)
            except Exception as exc:
                log.exception("embedding failed for model %s", self.model_id)
                job.finish(GenerationFailed(f"Embedding failed: {exc}"))
                continue
            if finished:
                job.finish(job.out)
            elif not self._jobs.put(job.owner, job, front=True, background=job.background):
                job.finish(ModelNotReady(f"The model '{self.model_id}' is shutting down."))

    def _run(self, job: _Job) -> bool:
        """Embed the job's inputs batch by batch; False when it yielded to another account."""
        llm, lib = self._llm, self._llama_cpp
        ctx, batch = llm._ctx, llm._batch  # the one context; only this thread touches it
        inputs, out, dim = job.inputs, job.out, self._dimensions
        while job.done_inputs < len(inputs):
            if job.cancelled.is_set():
                return True
            first = job.done_inputs
            tokens = 0
            end = first
            while end < len(inputs) and end - first < self._max_seqs:
                size = len(inputs[end])
                if end > first and tokens + size > self._batch_tokens:
                    break
                tokens += size
                end += 1
            batch.reset()
            for seq, tokens_of in enumerate(inputs[first:end]):
                batch.add_sequence(tokens_of, seq, True)
            ctx.kv_cache_clear()
            ctx.decode(batch)
            for seq in range(end - first):
                pointer = lib.llama_get_embeddings_seq(ctx.ctx, seq)
                out[first + seq] = np.ctypeslib.as_array(pointer, shape=(dim,))
            _normalize(out[first:end])
            job.done_inputs = end
            job.meter.tokens += tokens
            if end < len(inputs) and self._yields(job):
                return False
        return True

    def _yields(self, job: _Job) -> bool:
        """Between its batches a job gives way: a batch line's to any interactive job, an
        interactive one to another account's interactive job."""
        if job.background:
            return self._jobs.waiting(_live) > 0
        return bool(self._jobs.waiting_owners(_live) - {job.owner})


def _live(job: _Job) -> bool:
    return not job.cancelled.is_set()


def _normalize(vectors: Vectors) -> None:
    """L2-normalize each row in place (a zero vector stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)


def truncate(vectors: Vectors, dimensions: int) -> Vectors:
    """Matryoshka: the first `dimensions` of each vector, renormalized."""
    kept = np.array(vectors[:, :dimensions], dtype=np.float32)
    _normalize(kept)
    return kept
