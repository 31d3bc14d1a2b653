"""The embedded llama.cpp engine: one model, one context with N sequence slots, one worker thread.

llama.cpp contexts are not thread-safe, so exactly one thread touches the context: the
scheduler (scheduler.py), which decodes every running request's next token in one batch
(continuous batching) and keeps finished requests' KV cells for the next prompt that starts the
same way (prefix caching, slots.py). The event loop hands it jobs through a `FairQueue` (round
robin between owners — accounts — not first come first served) and receives events through
its run's one `Inbox` (inbox.py: `call_soon_threadsafe` when the reader waits), so generation
never blocks the loop. Each job carries a cancel flag checked every step: a client that goes
away frees its slot within one step, and its jobs still queued leave the queue at once. A
request's choices are checked against the wait bounds and queued in one synchronous call
(`submit`), so concurrent requests cannot all pass the check before any is queued: beyond
`max_queue` waiting choices, or beyond `max_queue_per_account` of one account's
(`ModelSpec.account_queue`), a request is refused with a 503 and a retry-after — the
per-account bound refuses only that account, so one account's burst never takes the queue from
everyone else. Batch lines (`Generation.background`) queue in the queue's background lane: they
take a slot only when no interactive choice waits, give it up first (scheduler.py), and are
neither checked against nor counted in these bounds (the batch runner bounds its lines).

The KV cache holds context_length cells for each slot; a shared prefix (n choices, a common
system prompt) is copied between slots, never recomputed.

Prompts: see tokenizer.py (linear, cancellable, message text never parsed for control tokens).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from tokendock.catalog import ModelSpec
from tokendock.errors import ModelNotReady, ServiceUnavailable
from tokendock.inference.engine.base import EngineLoad, Event, Finished, Generation
from tokendock.inference.engine.inbox import Inbox, raised
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.picker import FirstBytes, check_grammar
from tokendock.inference.engine.scheduler import Scheduler
from tokendock.inference.engine.sequence import PROMPT_SCORE_BATCH, Model
from tokendock.inference.engine.templates import ChatTemplate, RenderedChat, choose_template
from tokendock.inference.engine.tokenizer import Tokenizer
from tokendock.inference.fair_queue import FairQueue
from tokendock.inference.vocabulary import ChatTurn
from tokendock.inference.weights.files import LOAD_LOCK, resolve_gguf

log = logging.getLogger(__name__)

# Prompts shorter than this are tokenized on the event loop: a thread hop costs more.
INLINE_TOKENIZE_CHARS = 4096
# Conversations with more turns than this are rendered off the event loop.
INLINE_RENDER_TURNS = 64


class LlamaEngine:
    def __init__(self, spec: ModelSpec, data_dir: Path):
        self.model_id = spec.id
        self.spec = spec
        self._data_dir = data_dir
        self._model: Any = None  # llama_cpp's LlamaModel
        self._ctx: Any = None  # its LlamaContext
        self._scheduler: Scheduler | None = None
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
        return int(self._model.n_vocab()) if self._model is not None else 0

    @property
    def max_token_bytes(self) -> int:
        return self._first_bytes.longest if self._first_bytes is not None else 0

    @property
    def template_name(self) -> str:
        return self._template.name if self._template else "none"

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        assert self._scheduler is not None
        self._thread = threading.Thread(
            target=self._scheduler.run, name=f"llama:{self.model_id}", daemon=True
        )
        self._thread.start()

    def _load(self) -> None:
        import llama_cpp  # imported late: loading the shared library is not free
        from llama_cpp import _internals as internals
        from llama_cpp._utils import suppress_stdout_stderr

        spec = self.spec
        self.model_path = resolve_gguf(spec.path, spec.package, self._data_dir)
        threads = spec.threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = spec.slots * spec.context_length
        params.n_batch = params.n_ubatch = max(spec.batch_size, spec.slots)
        params.n_seq_max = spec.slots
        # Each sequence has cells of its own (attention reads only its own cells, and a batch
        # of consecutive sequence ids is one forward pass: scheduler.py) and weights are not
        # repacked (measured: no faster here, and batch-dependent numbers). Flash attention
        # is ~13 % faster per step; `deterministic` turns it off (sequence.py).
        params.kv_unified = False
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            if spec.deterministic
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        )
        # Sliding-window layers keep only their window (+ a batch) of cells per sequence, as
        # llama.cpp's server does: ~3x less KV memory for Gemma 3. A cached prefix whose window
        # cells were overwritten is evaluated again (sequence.take).
        params.swa_full = False
        # Logits rows per step: one per sequence, and a prompt being scored (echo) asks for a
        # chunk of them (each row is n_vocab floats: the compute buffer is sized for these).
        params.n_outputs_max = PROMPT_SCORE_BATCH + spec.slots
        params.n_outputs_max_per_seq = PROMPT_SCORE_BATCH
        params.n_threads = params.n_threads_batch = threads
        with LOAD_LOCK:
            model_params = llama_cpp.llama_model_default_params()
            model_params.use_extra_bufts = False  # no repacking (batch-dependent numbers)
            model = internals.LlamaModel(
                path_model=str(self.model_path), params=model_params, verbose=False
            )
            try:
                with suppress_stdout_stderr(disable=False):
                    ctx = internals.LlamaContext(model=model, params=params, verbose=False)
            except Exception:
                model.close()
                raise
        self._model, self._ctx = model, ctx
        # The vocab handle, for calls the wrapper lacks (EOG test, pieces of any length).
        self._vocab = model.vocab
        self._llama_cpp = llama_cpp
        self._bos = model.token_bos() if llama_cpp.llama_vocab_get_add_bos(self._vocab) else None
        bos_text = model.detokenize([model.token_bos()], special=True).decode("utf-8", "replace")
        eos_text = model.detokenize([model.token_eos()], special=True).decode("utf-8", "replace")
        name, source = choose_template(
            model.metadata().get("tokenizer.chat_template"),
            spec.chat_template,
            force_fallback=spec.force_chat_template,
        )
        self._template = ChatTemplate(source, bos_token=bos_text, eos_token=eos_text, name=name)
        self._tokenizer = Tokenizer(llama_cpp, self._vocab, f"{source}{bos_text}{eos_text}")
        self._first_bytes = FirstBytes(model.n_vocab(), self._piece)
        self._scheduler = Scheduler(
            Model(
                llama_cpp,
                ctx.ctx,
                self._vocab,
                model.n_vocab(),
                self._piece,
                self._first_bytes,
                self._bos,
                n_swa=llama_cpp.llama_model_n_swa(model.model),
            ),
            self._jobs,
            model_id=self.model_id,
            slots=spec.slots,
            context_length=spec.context_length,
            batch_size=params.n_batch,
        )
        # Batch lines beside interactive ones (catalog `batch_rows`; the slot count: no cap).
        self._scheduler.batch_rows = spec.batch_rows if spec.batch_rows < spec.slots else None

    async def close(self) -> None:
        if self._thread is not None:
            for job in self._jobs.close():
                job.emit(ModelNotReady(f"The model '{self.model_id}' is shutting down."))
                job.drop()
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    # -- load, for /metrics, /ready and spill-over ----------------------------------------

    def load(self) -> EngineLoad:
        sched = self._scheduler
        jobs = self._jobs
        queued, background_queued = len(jobs), jobs.waiting(background=True)
        if sched is None:
            return EngineLoad(
                self.spec.slots, 0, queued, 0, 0, 0.0, 0.0, 0, 0, 0, 0, background_queued
            )
        running = tuple(sched.running)  # the worker changes the list: read a copy
        return EngineLoad(
            slots=len(sched.slots),
            running=len(running),
            waiting=queued,
            kv_tokens=sched.kv_tokens,
            kv_capacity=len(sched.slots) * sched.context_length,
            tokens_per_second=sched.tokens_per_second,
            seconds_per_job=sched.seconds_per_job,
            generated=sched.generated,
            prompt_evaluated=sched.prompt_evaluated,
            prompt_cached=sched.prompt_cached,
            background_running=sum(seq.job.gen.background for seq in running),
            background_waiting=background_queued,
        )

    @property
    def saturated(self) -> bool:
        """No free slot for one more interactive choice (batch lines give theirs up)."""
        running, waiting = _interactive(self.load())
        return running + waiting >= self.spec.slots

    def estimated_wait(self) -> float:
        """Seconds an interactive choice arriving now would wait for a slot: 0 when one is
        free (or held by a batch line, which gives it up); else the interactive choices ahead
        of it, divided among the slots, times the recent seconds per job (at least a
        millisecond: saturated is never "no wait")."""
        load = self.load()
        running, waiting = _interactive(load)
        ahead = running + waiting - load.slots + 1
        if ahead <= 0:
            return 0.0
        return max(0.001, ahead / load.slots * load.seconds_per_job)

    def check_queue(self, choices: int, owner: str = "") -> None:
        """Refuse (503 with retry-after) a request whose choices would wait beyond the bound,
        or beyond `owner`'s own bound (then only that owner is refused). Only interactive
        choices count: batch lines wait in their own lane, bounded by the batch runner, and a
        slot a batch line holds is free for an interactive choice (it gives it up)."""
        load = self.load()
        running, waiting = _interactive(load)
        free = max(0, load.slots - running)
        if waiting + choices - free > self.spec.max_queue:
            message = f"The model '{self.model_id}' has too many requests waiting"
        elif self._jobs.count(owner) + choices - free > self.spec.account_queue:
            message = f"Too many of this account's choices are waiting for '{self.model_id}'"
        else:
            return
        error = ServiceUnavailable(f"{message}; try again shortly.", code="engine_overloaded")
        error.retry_after = max(1.0, self.estimated_wait())
        raise error

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
        # Ready once the worker runs: loading (in a thread) sets the model before the
        # tokenizer, template and scheduler, and a request may arrive in between.
        if self._thread is None:
            raise ModelNotReady(f"The model '{self.model_id}' is still loading; retry shortly.")

    # -- generation ----------------------------------------------------------------------

    def submit(
        self, jobs: Sequence[Generation], owner: str, inbox: Inbox | None = None
    ) -> list[Job]:
        """Check the wait bounds for all of a request's choices and queue them, in one
        synchronous call on the event loop (no other request is checked in between). Choice
        `i`'s events come into the run's one `inbox` (a new one when None), tagged `i`; a job
        is dropped with `cancel`."""
        self._require_ready()
        if not all(gen.background for gen in jobs):  # batch lines are never refused
            self.check_queue(len(jobs), owner)
        if inbox is None:
            inbox = Inbox(asyncio.get_running_loop())
        queued: list[Job] = []
        for i, gen in enumerate(jobs):
            job = Job(gen, inbox, i)
            if not self._jobs.put(gen.owner, job, background=gen.background):
                for done in queued:
                    self.cancel(done)
                raise ModelNotReady(f"The model '{self.model_id}' is shutting down.")
            queued.append(job)
        return queued

    def cancel(self, job: Job) -> None:
        """Stop a job: one still queued leaves the queue now (it stops counting against the
        bounds); one in a slot frees it at the worker's next step."""
        job.cancel()
        if self._jobs.remove(job.gen.owner, job):
            job.drop()

    async def generate(self, job: Generation) -> AsyncIterator[Event]:
        """One job, queued without the wait bounds (`submit` checks them for requests);
        closing this iterator cancels it."""
        self._require_ready()
        pending = Job(job, Inbox(asyncio.get_running_loop()))
        if not self._jobs.put(job.owner, pending, background=job.background):
            raise ModelNotReady(f"The model '{self.model_id}' is shutting down.")
        try:
            while True:
                for _, item in await pending.inbox.take():
                    if isinstance(item, BaseException):
                        raise raised(item)
                    yield item
                    if isinstance(item, Finished):
                        return
        finally:
            self.cancel(pending)

    def check_grammar(self, text: str) -> bool:
        self._require_ready()
        return check_grammar(self._llama_cpp, self._vocab, text)


def _interactive(load: EngineLoad) -> tuple[int, int]:
    """Interactive choices running and waiting (batch lines left out)."""
    return load.running - load.background_running, load.waiting - load.background_waiting


def _pieces(text: str, chat: bool) -> list[tuple[str, bool]]:
    """(text, parse control tokens) stretches of a prompt."""
    if chat and isinstance(text, RenderedChat):
        return [(p.text, not p.content) for p in text.pieces]
    return [(text, chat)]
