"""The Batch API's use cases (OpenAI's `/v1/batches`, Anthropic's `/v1/messages/batches`):
create, retrieve, list, cancel — per account; another account's batch is a 404, exactly like
an unknown id. The work itself is the runner's (services/batch_runner.py), woken here.

OpenAI: a batch is created `validating` from an uploaded `purpose: batch` file; the runner
validates the file and moves it on. Anthropic: the requests come in the body, are checked here
(custom_id `^[A-Za-z0-9_-]{1,64}$`, unique; `params` an object) and the batch starts
`in_progress` at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from tokendock.errors import InvalidRequest, NotFound, TokenDockError
from tokendock.services.batch_input import CUSTOM_ID
from tokendock.services.storage import quota_exceeded
from tokendock.storage.accounts import KeyRow
from tokendock.storage.batches import BatchRow, BatchStore
from tokendock.storage.quota import QuotaExceeded

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
MESSAGES = "/v1/messages"
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512
ANTHROPIC_MAX = 100_000
MAX_INPUT_BYTES = 200_000_000  # OpenAI's bound on a batch's input file


class Waker(Protocol):
    def wake(self) -> None: ...


class InputFiles(Protocol):
    async def get(self, account_id: int, file_id: str) -> Any: ...


def batch_not_found() -> NotFound:
    return NotFound("No batch found with that id.", param="batch_id", code="batch_not_found")


def check_metadata(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata must be an object of at most {METADATA_PAIRS} pairs.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY or not isinstance(value, str) or len(value) > METADATA_VALUE:
            raise InvalidRequest(
                f"metadata keys are strings of at most {METADATA_KEY} characters, values "
                f"strings of at most {METADATA_VALUE}.",
                param="metadata",
            )
    return orjson.dumps(metadata).decode()


class Batches:
    def __init__(
        self,
        store: BatchStore,
        files: InputFiles,
        *,
        window_seconds: int,
        max_lines: int,
        runner: Waker | None = None,
        storage_limit: int | None = None,
    ):
        self.store = store
        self._files = files
        self._window = timedelta(seconds=window_seconds)
        self._max_lines = max_lines
        self.runner = runner
        self._storage_limit = storage_limit  # the account's quota: batch lines count in it

    async def create(
        self,
        key: KeyRow,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Any = None,
    ) -> BatchRow:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint must be one of {', '.join(ENDPOINTS)}.", param="endpoint"
            )
        if completion_window != "24h":
            raise InvalidRequest("completion_window must be '24h'.", param="completion_window")
        meta = check_metadata(metadata)
        try:
            row = await self._files.get(key.account_id, input_file_id)
        except TokenDockError:
            raise NotFound(
                f"No file found with id '{input_file_id}'.",
                param="input_file_id",
                code="file_not_found",
            ) from None
        if row.purpose != "batch":
            raise InvalidRequest(
                f"The file '{input_file_id}' has purpose '{row.purpose}'; a batch's input file "
                "must be uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        values = self._values(key, "openai", endpoint, meta, "validating")
        values["input_file_id"] = input_file_id
        if row.bytes > MAX_INPUT_BYTES:  # failed at once, as OpenAI's validation would
            problem = {
                "code": "file_too_large",
                "message": f"A batch's input file may hold at most {MAX_INPUT_BYTES} bytes; "
                f"this one has {row.bytes}. Split it into several batches.",
                "param": "input_file_id",
                "line": None,
            }
            errors = {"object": "list", "data": [problem]}
            values.update(status="failed", failed_at=values["created_at"])
            values["errors"] = orjson.dumps(errors).decode()
        await self.store.create(values)
        return await self._created(key, values["id"])

    async def create_messages(self, key: KeyRow, requests: Sequence[Any]) -> BatchRow:
        """Anthropic's: the requests are in the body; checked here, then run at once."""
        if not requests:
            raise InvalidRequest("requests must hold at least one request.", param="requests")
        if len(requests) > min(ANTHROPIC_MAX, self._max_lines):
            raise InvalidRequest(
                f"requests may hold at most {min(ANTHROPIC_MAX, self._max_lines)} requests.",
                param="requests",
            )
        seen: set[str] = set()
        lines = []
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise InvalidRequest(
                    "custom_id must match ^[a-zA-Z0-9_-]{1,64}$.",
                    param=f"requests.{i}.custom_id",
                )
            if custom_id in seen:
                raise InvalidRequest(
                    f"Duplicate custom_id '{custom_id}': each request's must be unique.",
                    param=f"requests.{i}.custom_id",
                )
            seen.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                raise InvalidRequest("params must be an object.", param=f"requests.{i}.params")
            lines.append((custom_id, orjson.dumps(params).decode()))
        values = self._values(key, "anthropic", MESSAGES, None, "in_progress")
        values.update(total=len(lines), in_progress_at=values["created_at"])
        try:
            await self.store.create(values, lines, limit=self._storage_limit)
        except QuotaExceeded as exc:
            raise quota_exceeded(exc.used, exc.limit) from None
        return await self._created(key, values["id"])

    async def delete(self, key: KeyRow, batch_id: str, api: str) -> None:
        """An ended batch and its results, their storage freed (Anthropic's delete). 404 for
        another account's or a running batch."""
        row = await self.get(key, batch_id, api)
        if not await self.store.delete(key.account_id, row.id):
            raise InvalidRequest(
                "Only an ended batch can be deleted; cancel it first.", param="batch_id"
            )

    async def get(self, key: KeyRow, batch_id: str, api: str) -> BatchRow:
        row = await self.store.get(key.account_id, batch_id, api)
        if row is None:
            raise batch_not_found()
        return row

    async def page(
        self, key: KeyRow, api: str, after: str | None, limit: int, before: str | None = None
    ) -> tuple[list[BatchRow], bool]:
        """At most `limit` batches, and whether there are more."""
        rows = await self.store.page(key.account_id, api, after, limit + 1, before=before)
        if before is not None:
            return rows[-limit:], len(rows) > limit
        return rows[:limit], len(rows) > limit

    async def cancel(self, key: KeyRow, batch_id: str, api: str) -> BatchRow:
        row = await self.store.cancel(key.account_id, batch_id, api)
        if row is None:
            raise batch_not_found()
        if self.runner is not None:
            self.runner.wake()
        return row

    # -- the dashboard's: the signed-in account, either API ---------------------------------

    async def of_account(
        self, account_id: int, after: str | None, limit: int
    ) -> tuple[list[BatchRow], bool]:
        """At most `limit` of the account's batches (OpenAI's and Anthropic's), newest first,
        and whether there are more."""
        rows = await self.store.of_account(account_id, after, limit + 1)
        return rows[:limit], len(rows) > limit

    async def cancel_of_account(self, account_id: int, batch_id: str) -> BatchRow:
        """Cancel the account's batch whatever its API; another account's is not found."""
        row = await self.store.get(account_id, batch_id)
        if row is None:
            raise batch_not_found()
        cancelled = await self.store.cancel(account_id, batch_id, row.api)
        if cancelled is None:
            raise batch_not_found()
        if self.runner is not None:
            self.runner.wake()
        return cancelled

    def _values(
        self, key: KeyRow, api: str, endpoint: str, meta: str | None, status: str
    ) -> dict[str, Any]:
        at = datetime.now(UTC)
        prefix = "batch_" if api == "openai" else "msgbatch_"
        return {
            "id": prefix + secrets.token_hex(12),
            "account_id": key.account_id,
            "key_id": key.id,
            "api": api,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": meta,
            "status": status,
            "created_at": at,
            "expires_at": at + self._window,
        }

    async def _created(self, key: KeyRow, batch_id: str) -> BatchRow:
        if self.runner is not None:
            self.runner.wake()
        row = await self.store.get(key.account_id, batch_id)
        assert row is not None
        return row
