"""A request's `bound` step without blocking the event loop.

`Backend.bound` is cheap by contract, and for most requests it is: a few comparisons, run
inline (a thread hop would cost more). A request that carries a client's JSON schema (tools,
`response_format` json_schema) also has its grammar made there, on the embedded engine — bounded
work (inference/grammar/bounds.py: under a second by its deadline, milliseconds in practice),
but more than the loop should carry while every other request waits; that one runs in a worker
thread. Every caller of `bound` before admission (the pipeline, token counting) goes through
here, so a schema never runs on the loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tokendock.inference.backend import Bound, InferenceRequest
from tokendock.inference.structured import carries_schema


class Bounded(Protocol):
    def bound(self, req: InferenceRequest) -> Bound: ...


async def bound(backend: Bounded, req: InferenceRequest) -> Bound:
    """`backend.bound(req)`: in a worker thread when `req` carries a schema, inline otherwise."""
    if carries_schema(req.tools, req.output):
        return await asyncio.to_thread(backend.bound, req)
    return backend.bound(req)
