"""The in-process limiter: exact for one process. Nothing awaits between check and commit, so
each admission is atomic on the event loop without a lock."""

from __future__ import annotations

import time

from tokendock.limits.base import (
    Admission,
    Refusal,
    Subject,
    Window,
    interval,
    refused,
    tighter,
    try_cost,
    window,
)


class MemoryLimiter:
    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, set[str]] = {}

    async def admit(self, subjects: tuple[Subject, ...], tokens: int, ticket: str) -> Admission:
        now = time.monotonic()
        updates: list[tuple[str, float]] = []
        req_w: Window | None = None
        tok_w: Window | None = None
        for s in subjects:
            lim = s.limits
            if lim.concurrent and len(self._inflight.get(s.name, ())) >= lim.concurrent:
                raise refused(Refusal("concurrency", s.name, lim.concurrent, 1.0))
            for kind, limit, cost in (("requests", lim.rpm, 1), ("tokens", lim.tpm, tokens)):
                if not limit:
                    continue
                name = f"{s.name}:{kind[0]}"
                ok, new_tat, retry = try_cost(self._tat.get(name, now), now, limit, cost)
                if not ok:
                    current = window(limit, self._tat.get(name, now), now)
                    refusal = Refusal(
                        kind,  # type: ignore[arg-type]
                        s.name,
                        limit,
                        retry,
                        requests=current if kind == "requests" else None,
                        token_window=current if kind == "tokens" else None,
                    )
                    raise refused(refusal)
                updates.append((name, new_tat))
                w = window(limit, new_tat, now)
                if kind == "requests":
                    req_w = tighter(req_w, w)
                else:
                    tok_w = tighter(tok_w, w)
        for name, new_tat in updates:
            self._tat[name] = new_tat
        for s in subjects:
            if s.limits.concurrent:
                self._inflight.setdefault(s.name, set()).add(ticket)
        return Admission(ticket, subjects, tokens, req_w, tok_w)

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        now = time.monotonic()
        refund = max(admission.tokens - used_tokens, 0)
        for s in admission.subjects:
            if s.limits.tpm and refund:
                name = f"{s.name}:t"
                tat = self._tat.get(name, now)
                self._tat[name] = max(tat - refund * interval(s.limits.tpm), now)
            if s.limits.concurrent:
                self._inflight.get(s.name, set()).discard(admission.ticket)

    async def close(self) -> None:
        return None
