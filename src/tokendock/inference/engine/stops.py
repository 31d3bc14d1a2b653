"""Stop sequences that never leak, even when one is split across tokens.

`StopScanner.feed` returns the text that is safe to emit: everything except a tail that could
still grow into a stop sequence. When a stop sequence completes, the text before it is emitted
and `stopped` becomes true and `matched` names the stop sequence; nothing after it is ever returned.
"""

from __future__ import annotations


class StopScanner:
    __slots__ = ("_held", "_stops", "matched", "stopped")

    def __init__(self, stops: tuple[str, ...]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        hit = self._earliest_match(buf)
        if hit is not None:
            self.stopped = True
            self.matched = min((s for s in self._stops if buf.find(s) == hit), key=len)
            self._held = ""
            return buf[:hit]
        keep = self._partial_tail(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back tail, when generation ends without completing a stop sequence."""
        out, self._held = self._held, ""
        return "" if self.stopped else out

    def _earliest_match(self, buf: str) -> int | None:
        found = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        return min(found) if found else None

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of some stop."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:k]):
                    best = k
                    break
        return best
