"""Shared by chat and text completions: SSE rendering and cancel-on-disconnect.

Stream order (../shared/OPENAI-API.md): each choice's opening chunk, content chunks, exactly one
finish chunk per choice, the usage chunk when asked, then `data: [DONE]`. A failure after the
first byte becomes `data: {"error": …}` followed by `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from tokendock.billing.money import format_credits
from tokendock.errors import InternalError, TokenDockError
from tokendock.protocol.chat import usage_chunk_body
from tokendock.protocol.common import usage_dict
from tokendock.protocol.errors import envelope
from tokendock.protocol.sse import DONE, event
from tokendock.services.completions import ChoiceEvent, Run

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stamp:
    """What every chunk of one response shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Stamp:
        return cls(f"{prefix}-{secrets.token_hex(12)}", int(time.time()), model)


# (stamp, index, text | None for the opening chunk, finish_reason) -> chunk body
ChunkFn = Callable[[Stamp, int, str | None, str | None], dict[str, Any]]


async def sse_events(
    events: AsyncIterator[ChoiceEvent],
    run: Run,
    stamp: Stamp,
    chunk: ChunkFn,
    *,
    include_usage: bool,
    object_name: str,
    opening: bool,
) -> AsyncIterator[bytes]:
    completion_tokens = 0
    try:
        if opening:
            for index in range(len(run.jobs)):
                yield event(chunk(stamp, index, None, None))
        async for ev in events:
            if ev.finish_reason is None:
                yield event(chunk(stamp, ev.index, ev.text, None))
            else:
                completion_tokens += ev.completion_tokens
                yield event(chunk(stamp, ev.index, "", ev.finish_reason))
        if include_usage:
            usage = usage_dict(run.prompt_tokens, completion_tokens)
            if run.settlement is not None:
                # TokenDock's addition: what this request cost, in credits.
                usage["cost"] = format_credits(run.settlement.charged)
            yield event(
                usage_chunk_body(
                    request_id=stamp.id,
                    created=stamp.created,
                    model=stamp.model,
                    usage=usage,
                    object_name=object_name,
                )
            )
    except Exception as exc:
        yield failure_event(exc, stamp.id)
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
    yield DONE


def failure_event(exc: Exception, stream_id: str) -> bytes:
    """The error event that ends a stream which failed after its first byte (then `[DONE]`)."""
    if isinstance(exc, TokenDockError) and not isinstance(exc, InternalError):
        return event(envelope(exc))  # written for the client (upstream failures, shutdown)
    # A server-side failure's own text (an engine exception's message) goes to the log only.
    log.error("stream %s failed", stream_id, exc_info=exc)
    code = exc.code if isinstance(exc, TokenDockError) else None
    return event(envelope(InternalError("The server had an error while generating.", code=code)))


class ClientGone(Exception):
    """The client disconnected before a non-streaming response was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`; if the client disconnects first, cancel it (freeing the engine)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
