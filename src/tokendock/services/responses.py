"""The Responses API's service side: an admitted `Call` read into output items (`run`), the
record's final state from it (`conclude`), stored responses (always for one account: another
account's id is not found) and background responses.

A background response was admitted by the request that made it (402 / 429 there); its task
reads the call to its end and writes the record. `cancel` cancels the task: the call ends (its
settlement bills what the backend produced) and the record says `cancelled`. Every task is
tracked; `close()` (at shutdown, before the gate drains) cancels those still running and waits
for them, so each call is ended — and settled — exactly once.

Replicas share only the database: a cancel (or delete) that reaches another replica writes
`cancelled` to the row (or removes it). While it runs, each task re-reads its row's status
every `watch_every` seconds (one primary-key read) and stops when the row has ended or gone;
its final write (output, usage: what was billed) replaces that `cancelled`.

Stored ids are looked up only when they look like ids (`is_object_id`): anything else — a NUL,
a character outside the alphabet, over 64 characters — is not found before any query. Every
store counts against the account's storage quota (services/storage.py): `check_quota` before
admission; a background response's queued row is inserted under the quota atomically.

A response in a conversation (`conversation`, kept in its echoed `request`) appends its input
and output items to the conversation when it completes (or ends incomplete: the turn happened
and was billed) — in the SAME transaction that stores the response (`keep`, and a background
response's final write), so a stored response and its turn in the conversation are never seen
apart, and a retry after a failed write does not find half of it. With `store: false` the
items are appended alone, right after the answer. A failed or cancelled response appends
nothing; a conversation deleted meanwhile is left deleted.

At shutdown a response still running ends `failed` with the error "The server shut down.":
`cancelled` would say a client asked for it, and `incomplete` (incomplete_details) is OpenAI's
for a cut by max_output_tokens or a content filter; `failed` with an error is the terminal
status that tells a polling client the server ended it and the request may be sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from tokendock.errors import InternalError, InvalidRequest, NotFound, TokenDockError
from tokendock.inference.backend import Delta, Finish
from tokendock.protocol.response_shapes import JSON, OutputBuilder, ResponseRecord, response_usage
from tokendock.protocol.stored import is_object_id
from tokendock.services.pipeline import Call
from tokendock.services.running import ENDED_BY_ACCESS
from tokendock.services.storage import StorageQuota
from tokendock.storage.conversations import ConversationStore, appending, items_size
from tokendock.storage.quota import QuotaExceeded
from tokendock.storage.responses import RUNNING, Also, ResponseStore, stored_size

log = logging.getLogger(__name__)

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
APPENDED = ("completed", "incomplete")  # the statuses whose turn joins its conversation


def conversation_of(rec: ResponseRecord) -> str | None:
    """The id of the conversation the response belongs to, if any."""
    found = rec.request.get("conversation")
    return str(found["id"]) if isinstance(found, dict) else None


async def run(call: Call, builder: OutputBuilder, rec: ResponseRecord) -> AsyncIterator[list[JSON]]:
    """The call's events as Responses stream events (lists, one per backend event); when they
    end, `rec` holds the output, usage and status. A failure marks `rec` failed and is raised."""
    reason = "stop"
    events = call.events()
    try:
        async for event in events:
            if isinstance(event, Delta):
                out = builder.text(event.text)
                for piece in event.tool_calls or ():
                    out += builder.call(piece)
                if out:
                    yield out
            elif isinstance(event, Finish):
                reason = event.reason
    except Exception as exc:
        conclude(rec, builder, call, "failed", failure=exc)
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # closed early: the work stops
    incomplete = INCOMPLETE.get(reason)
    yield builder.finish(incomplete is None)
    conclude(rec, builder, call, "incomplete" if incomplete else "completed", incomplete)


def conclude(
    rec: ResponseRecord,
    builder: OutputBuilder,
    call: Call,
    status: str,
    reason: str | None = None,
    failure: BaseException | None = None,
) -> None:
    """The record's final state: output items, usage (what was billed) and status."""
    if status != "completed" and builder.items:
        builder.finish(False)  # close what is open (no one reads these events)
    rec.status = status
    rec.output = builder.items
    rec.incomplete_reason = reason
    tally = call.tally
    rec.usage = (
        response_usage(tally.prompt_tokens, tally.completion_tokens, tally.cached_tokens)
        if tally
        else None
    )
    if failure is not None:
        public = isinstance(failure, TokenDockError) and not isinstance(failure, InternalError)
        message = str(failure) if public else "The server had an error while generating."
        # Disabled / revoked mid-run (services/running.py): the error says so.
        code = failure.code if isinstance(failure, TokenDockError) else None
        ended = code is not None and code in ENDED_BY_ACCESS
        rec.error = {"code": code if ended else "server_error", "message": message}


WATCH_EVERY = 0.5  # seconds between a background task's reads of its row's status


class Responses:
    def __init__(
        self,
        store: ResponseStore,
        quota: StorageQuota,
        *,
        conversations: ConversationStore | None = None,
        watch_every: float = WATCH_EVERY,
    ):
        self.store = store
        self.quota = quota
        self.conversations = conversations
        self.watch_every = watch_every
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def get(
        self, account_id: int, response_id: str, param: str | None = None
    ) -> ResponseRecord:
        rec = await self.store.get(account_id, response_id) if is_object_id(response_id) else None
        if rec is None:
            raise NotFound(f"No response found with id '{_shown(response_id)}'.", param=param)
        return rec

    async def context(self, account_id: int, previous_response_id: str | None) -> list[JSON]:
        """The conversation a `previous_response_id` continues (its history): none without
        one; another account's id, or one not stored, is a 404 naming the field."""
        if previous_response_id is None:
            return []
        previous = await self.get(account_id, previous_response_id, param="previous_response_id")
        return previous.history()

    async def check_quota(self, rec: ResponseRecord, *, store: bool = True) -> None:
        """Before admission: a 400 `storage_quota_exceeded` when storing what this request
        sends (its input and the conversation it continues; its input appended to its
        conversation) would pass the account's quota."""
        incoming = stored_size(rec) if store else 0
        if conversation_of(rec) is not None:
            incoming += items_size(rec.input_items)
        await self.quota.check(rec.account_id, incoming)

    def _turn(self, rec: ResponseRecord) -> Also | None:
        """The write that appends the response's turn to its conversation, if it has one."""
        conversation = conversation_of(rec)
        if conversation is None or rec.status not in APPENDED:
            return None
        return appending(rec.account_id, conversation, [*rec.input_items, *rec.output])

    async def keep(self, rec: ResponseRecord, *, store: bool) -> None:
        """A finished response: stored (`store`) and its turn appended to its conversation,
        in one transaction; with `store: false` the turn alone."""
        turn = self._turn(rec)
        if store:
            await self.store.insert(rec, also=turn)
        elif turn is not None and self.conversations is not None:
            await self.conversations.append(
                rec.account_id, conversation_of(rec) or "", [*rec.input_items, *rec.output]
            )

    async def insert_queued(self, rec: ResponseRecord) -> None:
        """A background response's row, before it runs: refused atomically over the quota."""
        try:
            await self.store.insert(rec, limit=self.quota.limit)
        except QuotaExceeded as exc:
            raise self.quota.refused(exc) from None

    def launch(self, call: Call, rec: ResponseRecord) -> None:
        """Run an admitted call in the background; the record (stored, queued) follows it."""
        if self._closing:
            raise InternalError("The server is shutting down.")
        task = asyncio.create_task(self._background(call, rec))
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(rec.id, None))

    async def _background(self, call: Call, rec: ResponseRecord) -> None:
        builder = OutputBuilder()
        task = asyncio.current_task()
        assert task is not None
        live = True

        def stop() -> None:  # the row ended elsewhere: stop the work while it runs
            if live:
                task.cancel()

        watcher = asyncio.create_task(self._watch(rec, stop))
        try:
            try:
                rec.status = "in_progress"
                if not await self.store.update(rec, only_running=True):
                    stop()  # cancelled (or deleted) while queued, on any replica
                await call.begin()
                async for _ in run(call, builder, rec):
                    pass
            finally:  # no await before this: a cancel from here on is not the watcher's
                live = False
                watcher.cancel()
        except asyncio.CancelledError:
            await call.abandon()
            conclude(rec, builder, call, "cancelled")
            if self._closing:
                rec.status = "failed"
                rec.error = {"code": "server_error", "message": "The server shut down."}
        except Exception as exc:
            if rec.status != "failed":  # failed before its events (a 400 the tokenizer found)
                conclude(rec, builder, call, "failed", failure=exc)
            if not isinstance(exc, TokenDockError):
                log.error("background response %s failed", rec.id, exc_info=exc)
        finally:
            await call.abandon()  # a no-op once the call ended
        with contextlib.suppress(Exception):
            await self.store.update(rec, ending=True, also=self._turn(rec))

    async def _watch(self, rec: ResponseRecord, stop: Callable[[], None]) -> None:
        """Until cancelled: every `watch_every` s read the row's status; once it is no longer
        running (cancelled, by any replica) or gone (deleted), `stop()` the work."""
        while True:
            await asyncio.sleep(self.watch_every)
            try:
                status = await self.store.status(rec.account_id, rec.id)
            except Exception as exc:  # the database is briefly unreachable: read again later
                log.warning("background response %s: status not read (%s)", rec.id, exc)
                continue
            if status not in RUNNING:
                stop()
                return

    async def cancel(self, account_id: int, response_id: str) -> ResponseRecord:
        rec = await self.get(account_id, response_id)
        if not rec.background:
            raise InvalidRequest(
                "Only responses created with 'background': true can be cancelled.",
                param="response_id",
            )
        if not await self._stop(response_id) and rec.status in RUNNING:
            rec.status = "cancelled"  # its task is not in this process (or is gone)
            await self.store.update(rec, only_running=True)
        return await self.get(account_id, response_id)

    async def delete(self, account_id: int, response_id: str) -> None:
        await self.get(account_id, response_id)
        await self._stop(response_id)
        if not await self.store.delete(account_id, response_id):
            raise NotFound(f"No response found with id '{_shown(response_id)}'.")

    async def _stop(self, response_id: str) -> bool:
        """Cancel this process's task of the response and wait until it has written its end."""
        task = self._tasks.get(response_id)
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait({task})
        return True

    async def close(self) -> None:
        """At shutdown: cancel background responses still running; each ends its call."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _shown(response_id: str) -> str:
    """An id as an error message repeats it: bounded, and printable (never a NUL)."""
    shown = response_id[:80]
    return shown if shown.isprintable() else repr(shown)[1:-1]
