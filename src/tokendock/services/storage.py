"""The per-account storage quota: every stored object (responses, stored chat completions, and
the files to come) counts its bytes against one limit per account (`storage_quota_bytes`).

A request that would store is refused BEFORE admission (`check`: a 400
`storage_quota_exceeded`, nothing billed) when the account's stored bytes plus what the request
itself will store (its input, known from the body) pass the quota. An answer already paid for
is then always kept: its output is counted but never refused, so an account can end at most one
answer per request in flight above its quota — and every request after that is refused until
it deletes something (a delete frees the object's bytes in the same transaction).
Where nothing is generated first (a background response's queued row), the store refuses
atomically instead (`limit`, storage/quota.py), so that path holds exactly under any race.
"""

from __future__ import annotations

from tokendock.errors import InvalidRequest
from tokendock.storage.quota import QuotaExceeded, StorageUsage

MB = 1_000_000


def megabytes(n: int) -> str:
    """Bytes as the dashboard and the errors say them (MB = 10^6 bytes): "0 MB", "0.02 MB",
    "100 MB" — rounded up under 10 MB, so a little stored never shows as nothing."""
    if n >= 10 * MB:
        return f"{n / MB:.0f} MB"
    hundredths = -(-n // (MB // 100))
    return f"{hundredths // 100} MB" if hundredths % 100 == 0 else f"{hundredths / 100:.2f} MB"


def quota_exceeded(used: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"Storage quota exceeded: this account stores {megabytes(used)} of its "
        f"{megabytes(limit)} quota. Delete stored responses or chat completions to free space, "
        "or send 'store': false.",
        param="store",
        code="storage_quota_exceeded",
    )


class StorageQuota:
    def __init__(self, usage: StorageUsage, limit: int):
        self._usage = usage
        self.limit = limit or None  # 0 in the settings: no quota

    async def used(self, account_id: int) -> int:
        return await self._usage.used(account_id)

    async def check(self, account_id: int, incoming: int) -> None:
        """A 400 `storage_quota_exceeded` when `incoming` more bytes would pass the quota."""
        if self.limit is None:
            return
        used = await self._usage.used(account_id)
        if used + incoming > self.limit:
            raise quota_exceeded(used, self.limit)

    def refused(self, exc: QuotaExceeded) -> InvalidRequest:
        """The client's error for a store that refused atomically."""
        return quota_exceeded(exc.used, exc.limit)
