"""Continuous batching: many sequences decoded together on one llama.cpp context.

One worker thread owns the context (llama.cpp contexts are not thread-safe). Each step it

1. admits queued jobs into free slots (slots.py: longest cached prefix first; the queue is fair
   between accounts — fair_queue.py), and drops jobs whose client went away (their slot is free
   for the next step). When every slot is busy and an account holding none waits, the account
   holding the most gives one up (`_make_room`, priority.py): that sequence goes back to the
   queue with what it sampled and resumes later from its cached cells (all of them, when its
   slot was not taken meanwhile: nothing is evaluated again). Batch lines
   (`Generation.background`) are the lowest class: the queue hands them out only when no
   interactive job waits, and they give their slots up first, to interactive jobs only; among
   themselves, the same rule;
2. builds ONE batch: the last sampled token of every generating sequence, then prompt tokens of
   sequences still being prefilled, interactive ones first, then shortest prompt first, in
   chunks (`prefill_budget`: small beside another account's stream, so a long prompt never
   stalls it for more than a short step; a batch line's prompt beside any interactive stream is
   budgeted so too — rows.py);
3. calls `llama_decode` once, and samples each sequence's next token from its own row of logits
   with its own picker (sampling parameters, seed, grammar, logprobs — picker.py).

Requests join between steps and leave the moment they finish. n choices of one prompt evaluate
it once: the later choices wait ("follow") until the first has decoded the prompt, then get a
copy of its KV cells and sample from the same logits row. A job whose every prompt token must be
scored (echo + logprobs) asks for logits on each of them, `PROMPT_SCORE_BATCH` per step — once
per prompt of a request: its other choices follow the scoring one, or, admitted later, reuse
its scores (`PromptScores`) and its cells (`prompts_scored` counts the scorings).

Tenants: cells are reused, copied and followed only within one owner (slots.py); another
owner's slot is cleared when taken. A preempted job keeps its sampler (`Job.picker`): resuming
replays nothing. The step watchdog: each sequence's pick is timed in this thread's CPU seconds
(`clock`); one over `step_limit` (sequence.py) gets its token, then an `engine_step_timeout`
error, and leaves, billed for what it produced. The others go on.

Determinism (at temperature 0 the tokens a request gets alone, whatever runs beside it and
whatever the cache held): see sequence.py.
"""

from __future__ import annotations

import logging
import secrets
import time

from tokendock.errors import GenerationFailed, ModelNotReady
from tokendock.inference.engine.base import Finished, PromptScored
from tokendock.inference.engine.batch import Batch
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.picker import Picker
from tokendock.inference.engine.priority import set_aside
from tokendock.inference.engine.rows import step_rows
from tokendock.inference.engine.sequence import (
    MIN_CHUNK,
    STEP_LIMIT,
    Model,
    Seq,
    first_entry,
    hand_over,
    new_picker,
    same_prompt,
    score_rows,
    scored_prompt,
    step_timeout,
    take,
)
from tokendock.inference.engine.slots import Slot, plan
from tokendock.inference.engine.stops import StopScanner
from tokendock.inference.fair_queue import FairQueue
from tokendock.inference.vocabulary import TokenLogprob

log = logging.getLogger(__name__)

# Weight of the newest sample in the moving averages (tokens/s, seconds per job).
EWMA = 0.2


class Scheduler:
    def __init__(
        self,
        model: Model,
        jobs: FairQueue[Job],
        *,
        model_id: str,
        slots: int,
        context_length: int,
        batch_size: int,
    ):
        self._m = model
        self._jobs = jobs
        self.model_id = model_id
        self.slots = [Slot(i) for i in range(slots)]
        self.context_length = context_length
        self._batch = Batch(model.c, max(batch_size, slots))
        self.running: list[Seq] = []
        self.steps = 0
        # Figures for /metrics, /ready and the spill-over estimate (read from the event loop).
        self.generated = 0  # tokens sampled, all time
        self.prompt_evaluated = 0  # prompt tokens decoded, all time
        self.prompt_cached = 0  # prompt tokens reused from the cache, all time
        self.preempted = 0  # sequences sent back to the queue for another account
        self.prompts_scored = 0  # prompts whose every token was scored (echo + logprobs)
        self.cut = 0  # sequences the step watchdog ended
        # The watchdog's clock (this thread's CPU time) and limit; tests inject their own.
        self.clock = time.thread_time
        self.step_limit = STEP_LIMIT
        # Batch lines decoded per step beside interactive sequences (None: all of them; 0:
        # they pause while any interactive sequence runs). On a CPU each row costs a step
        # time, so every batch row slows the interactive streams beside it (rows.py).
        self.batch_rows: int | None = None
        self.tokens_per_second = 0.0
        self.seconds_per_job = 0.0
        self._last_step = 0.0

    # -- state, for the event loop ------------------------------------------------------

    @property
    def kv_tokens(self) -> int:
        """Tokens held in KV cells over all slots (cells shared by copies count once each)."""
        return sum(len(s.cells) for s in self.slots)

    # -- the worker thread ---------------------------------------------------------------

    def run(self) -> None:
        jobs = self._jobs
        while True:
            if not self.running:
                self._last_step = 0.0  # idle time is not a slow step
                job = jobs.get(skip=_claimed_not)
                if job is None:
                    break
                self._admit(job)
            if not self.cycle():
                break
        for seq in list(self.running):
            self._fail(seq, ModelNotReady(f"The model '{self.model_id}' is shutting down."))

    def cycle(self) -> bool:
        """One turn of the loop, without waiting: make room, admit queued jobs into free
        slots, drop cancelled sequences, decode one step. False once the queue is closed.
        (`run` calls it; tests drive it by hand to place each step.)"""
        jobs = self._jobs
        self._make_room()
        while any(not s.busy for s in self.slots):
            job = jobs.get(skip=_claimed_not, block=False)
            if job is None:
                break
            self._admit(job)
        if jobs.closed:
            return False
        self._sweep()
        if self.running:
            try:
                self._step()
            except Exception as exc:  # a decode failure: every sequence in it fails
                log.exception("decode failed for model %s", self.model_id)
                for seq in list(self.running):
                    self._fail(seq, GenerationFailed(f"Generation failed: {exc}"))
        return True

    def _admit(self, job: Job) -> None:
        """Put a job into a free slot: a new one, or one resuming after `_preempt` (its context
        is then its prompt and the tokens it sampled so far)."""
        gen = job.gen
        resuming = job.stops is not None
        if not resuming:
            job.stops = StopScanner(gen.stop)
            seed = gen.sampling.seed
            job.seed = seed if seed is not None else secrets.randbits(32)
        prompt = gen.prompt
        limit = min(gen.max_tokens, self.context_length - len(prompt))
        scoring = gen.prompt_logprobs and not resuming
        shared = gen.scores.tokens if scoring and gen.scores is not None else None
        if shared is not None:  # another choice of this prompt scored it: reuse its scores
            job.emit(PromptScored(shared))
            scoring = False
        if not prompt or (limit <= 0 and not scoring):
            job.emit(Finished("length", 0))
            job.finish_meter()
            return
        context = [*prompt, *job.sampled] if job.sampled else prompt
        leader = None
        if not resuming:
            leader = next((s for s in self.running if same_prompt(s, gen, scoring)), None)
        reuse = not scoring and leader is None
        # A job resuming with tokens sampled may find every cell but its last token's (the one
        # it was about to decode) where it left them: it goes on as if never set aside.
        whole = len(context) - 1 if resuming and job.sampled else -1
        tail = 1 if whole > 0 else MIN_CHUNK
        where = plan(self.slots, context, owner=gen.owner, reuse=reuse, tail=tail)
        assert where is not None  # only called with a free slot
        slot = where.slot
        slot.used = self.steps
        wanted = where.keep
        if wanted != whole:  # otherwise at least MIN_CHUNK tokens are evaluated (sequence.py)
            wanted = max(0, min(wanted, len(context) - MIN_CHUNK))
        keep = take(self._m, slot, wanted, where.source, gen.owner)
        picker, job.picker = job.picker, None  # a resumed job goes on with its own sampler
        try:
            picker = picker or self._timed_picker(job)
        except Exception as exc:
            slot.busy = False
            job.emit(exc)
            job.finish_meter()
            return
        seq = Seq(job, slot, picker, context, limit, todo=keep, admitted=time.monotonic())
        seq.scoring = scoring
        seq.produced = len(job.sampled)
        if keep == whole:
            seq.todo, seq.next = len(context), context[-1]
        if leader is not None:
            seq.leader = leader
            leader.followers.append(seq)
        elif not resuming:
            gen.meter.cached = keep
            self.prompt_cached += keep
            if scoring:
                seq.scored.append(first_entry(self._m, prompt[0]))
        self.running.append(seq)

    def _make_room(self) -> None:
        """Every slot is busy: the sequences `priority.set_aside` names give theirs up."""
        if any(not s.busy for s in self.slots):
            return
        for seq in set_aside(self.running, self._jobs):
            self._preempt(seq)

    def _preempt(self, seq: Seq) -> None:
        self.running.remove(seq)
        seq.slot.busy = False  # its cells stay: resuming in this slot evaluates nothing again
        self.preempted += 1
        job = seq.job
        job.picker = seq.picker  # kept whole: resuming replays nothing into it
        if not self._jobs.put(job.gen.owner, job, front=True, background=job.gen.background):
            job.emit(ModelNotReady(f"The model '{self.model_id}' is shutting down."))
            job.drop()

    def _picker(self, job: Job) -> Picker:
        return new_picker(self._m, job)

    def _timed_picker(self, job: Job) -> Picker:
        """A new job's picker, under the watchdog too (a grammar too costly to even set up)."""
        started = self.clock()
        picker = self._picker(job)
        took = self.clock() - started
        if took > self.step_limit:
            picker.close()
            raise step_timeout(took, self.step_limit)
        return picker

    def _sweep(self) -> None:
        """Sequences whose client went away leave now: their slots are free this step."""
        for seq in list(self.running):
            if seq.job.cancelled.is_set():
                self._finish(seq, "length")

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        running = self.running
        for seq in running:
            seq.row, seq.chunk = -1, (0, 0)
        # Rows go into the batch in sequence-id order (`rows`): llama.cpp splits a batch over
        # per-sequence KV cells into one pass per run of consecutive sequence ids, so any other
        # order would cost a whole forward pass per run.
        for seq, tokens, start, mode in step_rows(running, batch.room, self.batch_rows):
            first = batch.add(seq.slot.seq, tokens, start, logits=mode)
            if seq.next is not None:
                seq.row, seq.rowed = first, self.steps
            else:
                seq.chunk = (first, len(tokens))
        if batch.size == 0:
            return
        rc = self._m.c.llama_decode(self._m.ctx, batch.ready())
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.steps += 1
        sampled = 0
        for seq in list(running):
            try:
                if seq.row >= 0:  # its last token was decoded (not one sampled just now)
                    assert seq.next is not None
                    seq.slot.cells.append(seq.next)
                    seq.next = None
                    sampled += self._sample(seq, seq.row)
                elif seq.chunk[1]:
                    sampled += self._prefilled(seq)
            except Exception as exc:
                log.exception("generation failed for model %s", self.model_id)
                self._fail(seq, exc)
        self._count(sampled)

    def _prefilled(self, seq: Seq) -> int:
        first, n = seq.chunk
        start = seq.todo
        seq.slot.cells.extend(seq.prompt[start : start + n])
        seq.todo += n
        self.prompt_evaluated += n
        if seq.scoring:
            score_rows(self._m, seq, first, start, n)
        if seq.todo < len(seq.prompt):
            return 0
        row = first + n - 1
        scored: tuple[TokenLogprob, ...] = ()
        if seq.scoring:
            scored = scored_prompt(seq, self._m.bos)
            self.prompts_scored += 1
            share = seq.job.gen.scores
            if share is not None:  # the request's later choices reuse them
                share.tokens = scored
            seq.job.emit(PromptScored(scored))
            seq.scoring = False
        sampled = 0
        for follower in seq.followers:
            hand_over(self._m, seq, follower)
            if follower.scoring:  # it followed the scoring: the same scores, computed once
                follower.job.emit(PromptScored(scored))
                follower.scoring = False
            if follower in self.running:
                sampled += self._sample(follower, row)
        seq.followers = []
        return sampled + self._sample(seq, row)

    def _sample(self, seq: Seq, row: int) -> int:
        """Pick the sequence's next token from logits row `row`; 1 if a token was sampled."""
        if seq.limit <= 0:  # scoring the prompt was all it asked for
            self._finish(seq, "length")
            return 0
        m, job, picker, clock = self._m, seq.job, seq.picker, self.clock
        started = clock()
        token = picker.pick(m.c.llama_get_logits_ith(m.ctx, row), row)
        seq.produced += 1
        job.gen.meter.tokens = seq.produced
        if m.c.llama_vocab_is_eog(m.vocab, token):
            self._finish(seq, "stop")
            return 1
        entry = picker.logprob(token) if job.gen.top_logprobs is not None else None
        picker.accept(token)
        took = clock() - started
        job.sampled.append(token)
        job.emit_text(job.decoder.decode(m.piece(token)), entry)
        stops = job.stops
        assert stops is not None
        if stops.stopped:
            self._finish(seq, "stop")
        elif seq.produced >= seq.limit or job.cancelled.is_set():
            self._finish(seq, "length")
        elif took > self.step_limit:
            self._cut(seq, took)
        else:
            seq.next = token
        return 1

    def _cut(self, seq: Seq, took: float) -> None:
        """The watchdog: the sequence's pick took too long. It gets the text it produced, then
        the error; it is billed for its tokens; the others go on."""
        ms, limit = took * 1000, self.step_limit * 1000
        log.warning("model %s: a step took %.0f ms (limit %.0f): cut", self.model_id, ms, limit)
        self.cut += 1
        job = seq.job
        job.emit_text(job.decoder.decode(b"", final=True), None, final=True)
        self._fail(seq, step_timeout(took, self.step_limit))

    def _finish(self, seq: Seq, reason: str) -> None:
        job = seq.job
        stops = job.stops
        assert stops is not None
        if not stops.stopped:
            job.emit_text(job.decoder.decode(b"", final=True), None, final=True)
        job.emit(Finished("stop" if reason == "stop" else "length", seq.produced, stops.matched))
        self._release(seq)

    def _fail(self, seq: Seq, exc: BaseException) -> None:
        seq.job.emit(exc)
        self._release(seq)

    def _release(self, seq: Seq) -> None:
        if seq not in self.running:
            return
        self.running.remove(seq)
        seq.picker.close()
        seq.slot.busy = False
        if seq.leader is not None:
            seq.leader.followers.remove(seq)
        for follower in seq.followers:  # the leader left early: they start from what it did
            hand_over(self._m, seq, follower)
            if follower.scoring:  # and with the scores it had made so far
                follower.scored = list(seq.scored)
        seq.followers = []
        took = time.monotonic() - seq.admitted
        self.seconds_per_job += EWMA * (took - self.seconds_per_job)
        seq.job.finish_meter()

    def _count(self, sampled: int) -> None:
        now = time.monotonic()
        self.generated += sampled
        if self._last_step:
            took = now - self._last_step
            if took > 0:
                rate = sampled / took
                self.tokens_per_second += EWMA * (rate - self.tokens_per_second)
        self._last_step = now


def _claimed_not(job: Job) -> bool:
    return not job.start()
