"""What the batch runner needs from a front door, without HTTP: turn one line's body into the
endpoint's typed request, read the call's events, and render the body the endpoint would have
answered. The web layer implements it per endpoint (web/api/batch_lines.py) with the same
parse function and wire as the route, so a line's `response.body` is the route's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from tokendock.inference.backend import InferenceRequest, Tally
from tokendock.services.pipeline import Call


class LineWork(Protocol):
    request: InferenceRequest

    async def read(self, call: Call) -> None:
        """Consume the begun call's events (the call ends — and settles — when they end)."""
        ...

    def render(self, tally: Tally | None) -> dict[str, Any]:
        """The endpoint's whole answer, its usage from what was billed."""
        ...


# endpoint ("/v1/chat/completions" …) → parse(account_id, body) → the line's work; raises the
# endpoint's own 4xx (InvalidRequest naming the field) for a body the route would refuse.
Adapter = Callable[[int, bytes], Awaitable[LineWork]]
Adapters = Mapping[str, Adapter]
