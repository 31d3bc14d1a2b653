"""The embedded llama.cpp engine: one model, one worker thread, jobs served fairly by owner.

llama.cpp contexts are not thread-safe, so exactly one thread touches the context. The event
loop hands it jobs through a `FairQueue` (round robin between owners — accounts — not first come
first served) and receives events through `call_soon_threadsafe`, so generation never blocks the
loop. Each job carries a cancel flag checked after every token: a client that goes away frees
the engine within one token step. Jobs cancelled while still queued are skipped without touching
the model.

Time slicing: the context holds one sequence, so jobs take turns whole, except that a long job
yields the worker when another owner is waiting, after a slice that grows with its context
(`slice_tokens`). It goes back to its owner's queue and resumes later by re-evaluating prompt +
generated tokens (batched, many times faster per token than generating; no KV state is kept
per waiting job), with the sampler's penalty history replayed. One owner's `n: 128` can then
delay another owner's one-token request by one slice, not by hours.

Prompts: see tokenizer.py (linear, cancellable, message text never parsed for control tokens).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokendock.catalog import ModelSpec
from tokendock.errors import GenerationFailed, ModelNotReady
from tokendock.inference.base import (
    ChatTurn,
    Event,
    Finished,
    Generation,
    PromptScored,
    TokenLogprob,
)
from tokendock.inference.fair_queue import FairQueue
from tokendock.inference.job import Job
from tokendock.inference.model_files import LOAD_LOCK, resolve_gguf
from tokendock.inference.picker import FirstBytes, Picker, check_grammar, score
from tokendock.inference.stops import StopScanner
from tokendock.inference.templates import ChatTemplate, RenderedChat, choose_template
from tokendock.inference.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Prompts shorter than this are tokenized on the event loop: a thread hop costs more.
INLINE_TOKENIZE_CHARS = 4096
# Conversations with more turns than this are rendered off the event loop.
INLINE_RENDER_TURNS = 64
# A job yields to other owners after at least this many tokens (see `slice_tokens`).
SLICE_TOKENS = 32
# Prompt tokens scored per decode when the prompt's logprobs are asked for (echo).
PROMPT_SCORE_BATCH = 64


def slice_tokens(context: int) -> int:
    """Tokens a job generates before yielding to another owner's job. Resuming re-evaluates the
    job's context (prompt + generated so far): a slice of a quarter of it keeps that overhead
    to a small fraction of the generation time."""
    return max(SLICE_TOKENS, context // 4)


class LlamaEngine:
    def __init__(self, spec: ModelSpec, data_dir: Path):
        self.model_id = spec.id
        self.spec = spec
        self._data_dir = data_dir
        self._llm: Any = None
        self._template: ChatTemplate | None = None
        self._jobs: FairQueue[Job] = FairQueue()
        self._thread: threading.Thread | None = None
        self._tokenizer: Tokenizer | None = None
        # Prompts tokenized (calls into the tokenizer) and the tokens they made; `on_tokenize`
        # (the app's metrics) hears of each call as it starts.
        self.tokenize_calls = 0
        self.tokenized_tokens = 0
        self.on_tokenize: Callable[[str], None] | None = None
        self._pieces: dict[int, bytes] = {}
        self._bos: int | None = None
        self._vocab: Any = None
        self._first_bytes: FirstBytes | None = None
        self.model_path: Path | None = None
        self.load_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._thread is not None

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    @property
    def vocab_size(self) -> int:
        return int(self._llm.n_vocab()) if self._llm is not None else 0

    @property
    def template_name(self) -> str:
        return self._template.name if self._template else "none"

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        self._thread = threading.Thread(
            target=self._worker, name=f"llama:{self.model_id}", daemon=True
        )
        self._thread.start()

    def _load(self) -> None:
        import llama_cpp  # imported late: loading the shared library is not free

        self.model_path = resolve_gguf(self.spec.path, self.spec.package, self._data_dir)
        threads = self.spec.threads or os.cpu_count() or 1
        with LOAD_LOCK:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.spec.context_length,
                n_batch=self.spec.batch_size,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        self._llm = llm
        # Private handle, used for two vocab calls the public API lacks (EOG test and
        # token pieces of any length).
        self._vocab = llm._model.vocab
        self._llama_cpp = llama_cpp
        self._bos = llm.token_bos() if llama_cpp.llama_vocab_get_add_bos(self._vocab) else None
        bos_text = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        eos_text = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        name, source = choose_template(
            llm.metadata.get("tokenizer.chat_template"),
            self.spec.chat_template,
            force_fallback=self.spec.force_chat_template,
        )
        self._template = ChatTemplate(source, bos_token=bos_text, eos_token=eos_text, name=name)
        self._tokenizer = Tokenizer(llama_cpp, self._vocab, f"{source}{bos_text}{eos_text}")
        self._first_bytes = FirstBytes(llm.n_vocab(), self._piece)

    async def close(self) -> None:
        if self._thread is not None:
            for job in self._jobs.close():
                job.emit(ModelNotReady(f"The model '{self.model_id}' is shutting down."))
                job.finish_meter()
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    # -- text <-> tokens -----------------------------------------------------------------

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt (a `RenderedChat`: `tokenize(…, chat=True)` keeps message text as text)."""
        self._require_ready()
        assert self._template is not None
        return self._template.render_pieces(turns)

    async def tokenize_chat(self, turns: Sequence[ChatTurn]) -> list[int]:
        """Render and tokenize a conversation, off the event loop when it is large; stops
        between chunks when the caller is cancelled."""
        self._require_ready()
        if len(turns) <= INLINE_RENDER_TURNS:
            return await self.tokenize(self.render_chat(turns), chat=True)
        self._count_call()
        return await self._off_loop(lambda cancel: self._encode(self.render_chat(turns), cancel))

    async def tokenize(self, text: str, *, chat: bool) -> list[int]:
        """Exact ids, BOS first when the model wants one. `chat=True`: `text` is the template's
        output; a `RenderedChat` has its message text tokenized as plain text and only the
        template's own text parsed for control tokens (a plain str is parsed whole, for the
        control tokens the template writes). `chat=False`: all text, never a control token."""
        self._require_ready()
        self._count_call()
        pieces = _pieces(text, chat)
        if len(text) < INLINE_TOKENIZE_CHARS:
            return self._encode(pieces, None)
        return await self._off_loop(lambda cancel: self._encode(pieces, cancel))

    def _count_call(self) -> None:
        self.tokenize_calls += 1
        if self.on_tokenize is not None:
            self.on_tokenize(self.model_id)

    async def _off_loop(self, work: Callable[[threading.Event], list[int]]) -> list[int]:
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(work, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the thread stops at its next chunk (TokenizeCancelled, unobserved)
            raise

    def _encode(
        self, text: str | list[tuple[str, bool]], cancel: threading.Event | None
    ) -> list[int]:
        assert self._tokenizer is not None
        pieces = _pieces(text, True) if isinstance(text, str) else text
        tokens = self._tokenizer.encode_pieces(pieces, cancel)
        if self._bos is not None and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        self.tokenized_tokens += len(tokens)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._require_ready()
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", "replace")

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            buf = ctypes.create_string_buffer(size)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
            if n < 0:
                size = -n
                buf = ctypes.create_string_buffer(size)
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
            piece = buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def _require_ready(self) -> None:
        if self._llm is None:
            raise ModelNotReady(f"The model '{self.model_id}' is still loading; retry shortly.")

    # -- generation ----------------------------------------------------------------------

    async def generate(self, job: Generation) -> AsyncIterator[Event]:
        self._require_ready()
        pending = Job(job, asyncio.get_running_loop())
        if not self._jobs.put(job.owner, pending):
            raise ModelNotReady(f"The model '{self.model_id}' is shutting down.")
        try:
            while True:
                item = await pending.events.get()
                if isinstance(item, BaseException):
                    raise GenerationFailed(f"Generation failed: {item}") from item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            pending.cancel()

    def _worker(self) -> None:
        while (job := self._jobs.get(skip=lambda queued: not queued.start())) is not None:
            done = True
            try:
                done = self._run(job)
            except Exception as exc:
                log.exception("generation failed for model %s", self.model_id)
                job.emit(exc)
            if not done and not self._jobs.put(job.gen.owner, job, front=True):
                job.emit(ModelNotReady(f"The model '{self.model_id}' is shutting down."))
                done = True
            if done:
                job.finish_meter()

    def _run(self, job: Job) -> bool:
        """Generate one slice of the job; False when it yielded to another owner unfinished."""
        gen = job.gen
        limit = min(gen.max_tokens, self.context_length - len(gen.prompt))
        meter = gen.meter
        if job.stops is None:
            job.stops = StopScanner(gen.stop)
            seed = gen.sampling.seed
            job.seed = seed if seed is not None else secrets.randbits(32)
            if gen.prompt_logprobs:
                job.emit(PromptScored(self._score_prompt(gen.prompt, gen.top_logprobs or 0)))
        if limit <= 0:
            job.emit(Finished("length", 0))
            return True
        stops = job.stops
        picker = self._picker(job)
        is_eog = self._llama_cpp.llama_vocab_is_eog
        produced = len(job.sampled)
        budget = produced + slice_tokens(len(gen.prompt) + produced)
        reason: str = "length"
        try:
            self._evaluate([*gen.prompt, *job.sampled])
            while True:
                token = picker.pick(self._logits())
                produced += 1
                meter.tokens = produced
                if is_eog(self._vocab, token):
                    reason = "stop"
                    break
                entry = picker.logprob(token) if gen.top_logprobs is not None else None
                picker.accept(token)
                job.sampled.append(token)
                job.emit_text(job.decoder.decode(self._piece(token)), entry)
                if stops.stopped:
                    reason = "stop"
                    break
                if produced >= limit or job.cancelled.is_set():
                    break
                if produced >= budget and self._jobs.others_waiting(gen.owner, _live):
                    return False
                self._advance(token)
        finally:
            picker.close()
        if not stops.stopped:
            job.emit_text(job.decoder.decode(b"", final=True), None, final=True)
        job.emit(Finished("stop" if reason == "stop" else "length", produced, stops.matched))
        return True

    def _picker(self, job: Job) -> Picker:
        gen = job.gen
        # A resumed slice continues the random stream from a seed of its own (still fixed
        # for a fixed seed and the same slicing).
        return Picker(
            self._llama_cpp,
            self._vocab,
            self.vocab_size,
            gen.sampling,
            seed=(job.seed + len(job.sampled)) & 0xFFFFFFFF,
            piece=self._piece,
            grammar=gen.grammar,
            top_logprobs=gen.top_logprobs,
            history=job.sampled,
            index=self._first_bytes if gen.grammar is not None else None,
            ctx=self._llm._ctx.ctx,
        )

    def _logits(self) -> Any:
        """The last evaluated position's logits (a float pointer into the context)."""
        return self._llm._ctx.get_logits_ith(-1)

    def _advance(self, token: int) -> None:
        self._llm.eval([token])

    def _evaluate(self, tokens: list[int]) -> None:
        """Make the context hold `tokens` with the last one's logits ready: the longest prefix
        already in the KV cache is kept (a resumed slice or a shared prompt), the rest decoded."""
        llm = self._llm
        have = min(llm.n_tokens, len(tokens) - 1)
        cached = llm.input_ids[:have]
        same = 0
        if have > 0:
            diff = np.flatnonzero(cached != np.asarray(tokens[:have], dtype=np.intc))
            same = int(diff[0]) if len(diff) else have
        if not llm._ctx.kv_cache_seq_rm(-1, same, -1):
            llm._ctx.kv_cache_clear()
            same = 0
        llm.n_tokens = same
        llm.eval(tokens[same:])

    def _score_prompt(self, prompt: Sequence[int], top: int) -> tuple[TokenLogprob, ...]:
        """Each prompt token's logprob given the tokens before it (the first has none)."""
        llm = self._llm
        llm._ctx.kv_cache_clear()
        llm.n_tokens = 0
        first = self._piece(prompt[0]) if prompt else b""
        entries = [TokenLogprob(first.decode("utf-8", "replace"), math.nan, first)]
        step = min(PROMPT_SCORE_BATCH, llm.n_batch)
        for start in range(0, len(prompt), step):
            chunk = list(prompt[start : start + step])
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[start : start + len(chunk)] = chunk
            llm.n_tokens = start + len(chunk)
            for i in range(len(chunk)):
                if start + i + 1 < len(prompt):
                    values = np.ctypeslib.as_array(
                        llm._ctx.get_logits_ith(i), shape=(self.vocab_size,)
                    )
                    entries.append(score(values, prompt[start + i + 1], top, self._piece))
        if prompt and prompt[0] == self._bos:  # not text the client sent: the next one counts
            entries.pop(0)
        return tuple(entries)

    def check_grammar(self, text: str) -> bool:
        self._require_ready()
        return check_grammar(self._llama_cpp, self._vocab, text)


def _live(job: Job) -> bool:
    return not job.cancelled.is_set()


def _pieces(text: str, chat: bool) -> list[tuple[str, bool]]:
    """(text, parse control tokens) stretches of a prompt."""
    if chat and isinstance(text, RenderedChat):
        return [(p.text, not p.content) for p in text.pieces]
    return [(text, chat)]
