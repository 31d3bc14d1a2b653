"""One generation job inside the embedded engine's scheduler: its cancel flag, its progress (kept
when it leaves its slot to resume later), its stop scanner and decoder, and the text (with
logprobs) it hands back to the event loop — into its run's one `Inbox` (inbox.py), tagged with
its choice index.

`emit_text` runs the text through the stop scanner: each token's logprob goes out with the
delta that completes its text, so the tokens of a stop sequence never do.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import threading
from dataclasses import dataclass, field

from tokendock.inference.engine.base import Event, Generation, TextDelta
from tokendock.inference.engine.inbox import Inbox
from tokendock.inference.engine.picker import Picker
from tokendock.inference.engine.stops import StopScanner
from tokendock.inference.vocabulary import TokenLogprob


@dataclass(slots=True, eq=False)  # a job is itself: the queue finds it by identity
class Job:
    gen: Generation
    inbox: Inbox  # its run's one queue: every choice of the request puts its events there
    choice: int = 0  # its index among the run's choices (the tag on its events)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Guards the queued → started transition against a concurrent cancel.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Tokens sampled so far: a job taken out of its slot (another account needed one) comes
    # back with them as part of its context.
    sampled: list[int] = field(default_factory=list)
    stops: StopScanner | None = None
    # Its sampler state while it waits to resume (kept whole: resuming replays nothing).
    picker: Picker | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    seed: int = 0
    # Logprobs of tokens whose text the stop scanner still holds: (text length so far, entry).
    held: collections.deque[tuple[int, TokenLogprob]] = field(default_factory=collections.deque)
    fed: int = 0  # characters given to the stop scanner
    sent: int = 0  # characters it let through

    def start(self) -> bool:
        """Worker thread: claim the job unless it was cancelled while queued; one cancelled
        while it waited to resume is done now (it is billed for the tokens it made)."""
        with self.lock:
            if self.cancelled.is_set():
                self.drop()
                return False
            self.gen.meter.started = True
            return True

    def drop(self) -> None:
        """It leaves the queue for good: free a kept sampler; one that had started is done
        now (billed for the tokens it made)."""
        if self.picker is not None:
            self.picker.close()
            self.picker = None
        if self.gen.meter.started:
            self.finish_meter()

    def cancel(self) -> None:
        """Event loop: stop the job; one never started is done at once (nothing to bill)."""
        with self.lock:
            self.cancelled.set()
            if not self.gen.meter.started:
                self.gen.meter.done.set()

    def emit(self, item: Event | BaseException) -> None:
        if not self.inbox.put(self.choice, item):  # the loop closed (shutdown): nobody listens
            self.cancelled.set()

    def finish_meter(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.inbox.loop.call_soon_threadsafe(self.gen.meter.done.set)

    def emit_text(self, text: str, entry: TokenLogprob | None, *, final: bool = False) -> None:
        """Text through the stop scanner; each token's logprob goes out with the delta that
        completes its text (the tokens of a stop sequence never do)."""
        stops = self.stops
        assert stops is not None
        self.fed += len(text)
        if entry is not None:
            self.held.append((self.fed, entry))
        out = stops.feed(text) if text else ""
        if final:
            out += stops.flush()
        self.sent += len(out)
        held = self.held
        ready: list[TokenLogprob] = []
        while held and (held[0][0] <= self.sent or (final and not stops.stopped)):
            ready.append(held.popleft()[1])
        if out or ready:
            self.emit(TextDelta(out, tuple(ready)))
