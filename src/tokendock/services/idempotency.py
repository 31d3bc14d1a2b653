"""`Idempotency-Key` on every POST that runs a model or stores something (chat completions,
completions, embeddings, Responses — background included —, Messages): a retry is never charged
twice. Claimed in `Pipeline.start`, so every front door honours it alike.

Per API key, within 24 hours, a key names one request body:
- first use: the request runs and its non-streaming response is stored;
- retry while the first still runs: 409 (the SDKs retry 409 with back-off);
- retry after it finished: the stored response, byte for byte, with `idempotent-replayed: true`
  (a streamed response cannot be replayed: 409 says so);
- same key with a different body: 400;
- the first request failed before it was billed: the record is dropped, so a retry runs anew.
A `running` record older than `stale_after` (its process died) is taken over.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tokendock.errors import Conflict, InvalidRequest
from tokendock.storage.idempotency import IdempotencyStore

WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: bytes


class Idempotency:
    def __init__(self, store: IdempotencyStore, *, stale_after: timedelta = timedelta(minutes=15)):
        self._store = store
        self._stale_after = stale_after

    async def begin(self, key_id: int, idem: str, body: bytes) -> Replay | None:
        """None: go ahead (and call `done` or `failed`). A Replay: answer with it."""
        if not 1 <= len(idem) <= 200:
            raise InvalidRequest("Idempotency-Key must be 1 to 200 characters.")
        digest = hashlib.sha256(body).hexdigest()
        record = await self._store.claim(key_id, idem, digest)
        if record is None:
            return None
        age = datetime.now(UTC) - record.created_at
        expired = age > WINDOW or (record.status == "running" and age > self._stale_after)
        if expired:
            await self._store.forget(key_id, idem)
            return await self.begin(key_id, idem, body)
        if record.body_digest != digest:
            raise InvalidRequest(
                "This Idempotency-Key was already used with a different request (body or route).",
                code="idempotency_key_reused",
            )
        if record.status == "running":
            raise Conflict(
                "A request with this Idempotency-Key is still running; retry shortly.",
                code="idempotent_request_in_progress",
            )
        if record.status == "stream" or record.response_body is None:
            raise Conflict(
                "A streamed request with this Idempotency-Key already ran; streams are not "
                "replayed.",
                code="idempotent_stream_completed",
            )
        return Replay(record.response_status or 200, record.response_body)

    async def done(self, key_id: int, idem: str, status: int, body: bytes) -> None:
        await self._store.finish(key_id, idem, "done", status, body)

    async def streamed(self, key_id: int, idem: str) -> None:
        await self._store.finish(key_id, idem, "stream", 200, None)

    async def failed(self, key_id: int, idem: str) -> None:
        await self._store.forget(key_id, idem)
