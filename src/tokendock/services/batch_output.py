"""A batch's end: its output and error files in OpenAI's line format, and its final status.

OpenAI's line format, one per request, keyed by `custom_id`:
    output file  {"id": "batch_req_…", "custom_id", "response": {"status_code": 200,
                  "request_id", "body": <the endpoint's answer>}, "error": null}
    error file   the same with the endpoint's error (status_code 4xx / 5xx, body its
                 envelope); or, for a line never run, "response": null and "error": {"code":
                 "batch_cancelled" | "batch_expired", "message"}
A batch with no line of a kind has no file of it (null id). Anthropic's batches have no files:
their results stream from the lines (web/api/message_batches.py).

Final status: `cancelled` when it was cancelled, `expired` when its window passed, else
`completed`. The files are written before the status moves, under the finalizer's lease; a
finalizer that dies half-way leaves the batch `finalizing` for the next one (its unfinished
file is never `processed`, and is swept).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from tokendock.storage.batches import BatchRow, BatchStore, DoneLine

NOT_RUN = {
    "canceled": ("batch_cancelled", "This request was not run: the batch was cancelled."),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


class FileRowLike(Protocol):
    id: str


class FileService(Protocol):
    async def get(self, account_id: int, file_id: str) -> Any: ...

    def content(self, row: Any) -> AsyncIterator[bytes]: ...

    async def store_output(
        self, account_id: int, purpose: str, filename: str, chunks: AsyncIterator[bytes]
    ) -> Any: ...


def line_id(batch_id: str, line: int) -> str:
    """A stable id per request (the same if the files are written again)."""
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:32]


def openai_line(batch_id: str, done: DoneLine) -> bytes:
    result = None if done.result is None else orjson.loads(done.result)
    error = None
    if result is None:
        code, message = NOT_RUN.get(done.outcome, ("batch_failed", "This request was not run."))
        error = {"code": code, "message": message}
    line = {
        "id": line_id(batch_id, done.line),
        "custom_id": done.custom_id,
        "response": result,
        "error": error,
    }
    return orjson.dumps(line) + b"\n"


def final_status(batch: BatchRow) -> str:
    if batch.times["cancelling_at"] is not None:
        return "cancelled"
    if batch.times["expired_at"] is not None:
        return "expired"
    return "completed"


class Finalizer:
    def __init__(self, store: BatchStore, files: FileService):
        self._store = store
        self._files = files

    async def input(self, batch: BatchRow) -> AsyncIterator[bytes]:
        """The batch's input file's bytes (NotFound when it was deleted meanwhile)."""
        assert batch.input_file_id is not None
        row = await self._files.get(batch.account_id, batch.input_file_id)
        return self._files.content(row)

    async def finish(self, batch: BatchRow, owner: str) -> None:
        output = errors = None
        if batch.api == "openai":
            if batch.succeeded:
                output = await self._file(batch, "output", lambda d: d.outcome == "succeeded")
            if batch.done - batch.succeeded:
                errors = await self._file(batch, "error", lambda d: d.outcome != "succeeded")
        await self._store.compact(batch.id, batch.account_id, keep_results=batch.api != "openai")
        status = final_status(batch)
        at = datetime.now(UTC)
        await self._store.move(
            batch.id,
            "finalizing",
            owner=owner,
            status=status,
            output_file_id=output,
            error_file_id=errors,
            lease_owner=None,
            lease_until=None,
            **{f"{status}_at": at},
        )

    async def _file(self, batch: BatchRow, kind: str, keep: Any) -> str:
        async def chunks() -> AsyncIterator[bytes]:
            buffer = bytearray()
            async for done in self._store.results(batch.id):
                if keep(done):
                    buffer += openai_line(batch.id, done)
                    if len(buffer) >= 1 << 20:
                        yield bytes(buffer)
                        buffer.clear()
            if buffer:
                yield bytes(buffer)

        row = await self._files.store_output(
            batch.account_id, "batch_output", f"{batch.id}_{kind}.jsonl", chunks()
        )
        return str(row.id)
