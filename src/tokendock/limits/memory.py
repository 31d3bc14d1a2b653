"""The in-process limiter: exact for one process. Nothing awaits between check and commit, so
each admission is atomic on the event loop without a lock."""

from __future__ import annotations

import time

from tokendock.limits.base import (
    Admission,
    Refusal,
    Subject,
    interval,
    refused,
    remaining,
    try_cost,
    window,
)


class MemoryLimiter:
    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, set[str]] = {}

    async def admit(self, subjects: tuple[Subject, ...], tokens: int, ticket: str) -> Admission:
        now = time.monotonic()
        tats = self._tat
        updates: list[tuple[str, float]] = []
        tightest: dict[str, tuple[int, int, float]] = {}  # kind -> (remaining, limit, tat)
        for s in subjects:
            lim = s.limits
            if lim.concurrent and len(self._inflight.get(s.name, ())) >= lim.concurrent:
                raise refused(Refusal("concurrency", s.name, lim.concurrent, 1.0))
            for kind, limit, cost in (("requests", lim.rpm, 1), ("tokens", lim.tpm, tokens)):
                if not limit:
                    continue
                name = s.name + (":r" if kind == "requests" else ":t")
                tat = tats.get(name, now)
                ok, new_tat, retry = try_cost(tat, now, limit, cost)
                if not ok:
                    current = window(limit, tat, now)
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
                left = remaining(limit, new_tat, now)
                best = tightest.get(kind)
                if best is None or left < best[0]:
                    tightest[kind] = (left, limit, new_tat)
        for name, new_tat in updates:
            tats[name] = new_tat
        for s in subjects:
            if s.limits.concurrent:
                self._inflight.setdefault(s.name, set()).add(ticket)
        req, tok = tightest.get("requests"), tightest.get("tokens")
        return Admission(
            ticket,
            subjects,
            tokens,
            None if req is None else window(req[1], req[2], now),
            None if tok is None else window(tok[1], tok[2], now),
        )

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        now = time.monotonic()
        refund = max(admission.tokens - used_tokens, 0)
        for s in admission.subjects:
            if s.limits.tpm and refund:
                name = s.name + ":t"
                tat = self._tat.get(name, now)
                self._tat[name] = max(tat - refund * interval(s.limits.tpm), now)
            if s.limits.concurrent:
                self._inflight.get(s.name, set()).discard(admission.ticket)

    async def close(self) -> None:
        return None
