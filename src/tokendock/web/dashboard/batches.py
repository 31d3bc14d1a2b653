"""The Batches and Files pages: the signed-in account's batches (OpenAI's and Anthropic's) with
their progress, counts and cost so far, a Cancel button for a running one and links to its
output and error files; and the account's files, each downloadable and deletable.

Everything is read for the signed-in account only: a batch or file id that is another
account's is a 404 page, exactly like one that does not exist. Cancelling and deleting are
form posts carrying the session's CSRF token. A file downloads as it is streamed from the
database (services/files.py), never whole in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tokendock.errors import TokenDockError
from tokendock.protocol.stored import is_object_id
from tokendock.security.sessions import Session
from tokendock.services.batches import Batches
from tokendock.services.files import Files
from tokendock.services.storage import megabytes
from tokendock.storage.batches import BatchRow
from tokendock.storage.files import FileRow, UnknownCursor
from tokendock.web.api.message_batches import processing_status, result_lines
from tokendock.web.dashboard.views import SECURITY_HEADERS, posted, redirect, render, signed_in

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
RUNNING = ("validating", "in_progress")  # a batch the Cancel button can stop
ACTIVE = (*RUNNING, "finalizing", "cancelling")  # the page reloads itself while one is
REFRESH_SECONDS = 3
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class BatchView:
    """One table row: the batch and what the page shows of it."""

    row: BatchRow
    api: str  # "OpenAI" / "Anthropic"
    status: str  # Anthropic's batches show their own `processing_status` words too
    cancellable: bool

    @property
    def percent(self) -> int:
        """Lines done of all (0 while an OpenAI batch's file is still being validated)."""
        total = self.row.total
        return min(100, 100 * self.row.done // total) if total else 0


def view(row: BatchRow) -> BatchView:
    """Anthropic's batches show their `processing_status` (and ours when it says more)."""
    if row.api == "anthropic":
        status = processing_status(row)
        shown = status if status == row.status else f"{status} ({row.status})"
        return BatchView(row, "Anthropic", shown, row.status in RUNNING)
    return BatchView(row, "OpenAI", row.status, row.status in RUNNING)


def batches_of(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


def not_found(request: Request, session: Session, what: str) -> Response:
    return render(
        request,
        "error.html",
        session,
        status=404,
        title=f"No such {what}",
        message=f"This account has no {what} with that id.",
        signed_in=True,
    )


@router.get("/dashboard/batches")
async def batches_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    _, session, account = found
    after = request.query_params.get("after") or None
    rows, more = await batches_of(request).of_account(account.id, after, PER_PAGE)
    views = [view(r) for r in rows]
    return render(
        request,
        "batches.html",
        session,
        page="batches",
        account=account,
        batches=views,
        older=rows[-1].id if more and rows else None,
        refresh=REFRESH_SECONDS if any(v.row.status in ACTIVE for v in views) else None,
    )


@router.post("/dashboard/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    _, session, account, _ = found
    try:
        await batches_of(request).cancel_of_account(account.id, batch_id)
    except TokenDockError:
        return not_found(request, session, "batch")
    return redirect("/dashboard/batches")


@router.get("/dashboard/batches/{batch_id}/results")
async def anthropic_results(request: Request, batch_id: str) -> Response:
    """An ended Message Batch's results, as GET /v1/messages/batches/{id}/results sends them
    (OpenAI's batches have output and error files instead)."""
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    _, session, account = found
    batches = batches_of(request)
    row = await batches.store.get(account.id, batch_id, "anthropic")
    if row is None or processing_status(row) != "ended":
        return not_found(request, session, "ended Message Batch")
    headers = {
        **SECURITY_HEADERS,
        "content-disposition": f'attachment; filename="{row.id}_results.jsonl"',
    }
    return StreamingResponse(
        result_lines(batches, row.id), media_type="application/octet-stream", headers=headers
    )


@router.get("/dashboard/files")
async def files_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    after = request.query_params.get("after") or None
    rows, more = await _file_page(services.files, account.id, after)
    deleted = request.query_params.get("deleted")
    quota = services.files.quota
    return render(
        request,
        "files.html",
        session,
        page="files",
        account=account,
        files=rows,
        older=rows[-1].id if more and rows else None,
        deleted=deleted if deleted and is_object_id(deleted) else None,
        storage_limit=None if quota.limit is None else megabytes(quota.limit),
        storage_used=megabytes(await quota.used(account.id)),
    )


async def _file_page(
    files: Files, account_id: int, after: str | None
) -> tuple[list[FileRow], bool]:
    """Newest first, PER_PAGE at a time; a cursor that is not one of the account's files
    shows the first page."""
    page = partial(
        files.store.page, account_id, files.clock(), purpose=None, limit=PER_PAGE, descending=True
    )
    try:
        return await page(after=after if after is None or is_object_id(after) else None)
    except UnknownCursor:
        return await page(after=None)


@router.get("/dashboard/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    try:
        row = await services.files.get(account.id, file_id)
    except TokenDockError:
        return not_found(request, session, "file")
    name = UNSAFE_NAME.sub("_", row.filename).strip("._") or row.id
    headers = {
        **SECURITY_HEADERS,
        "content-length": str(row.bytes),
        "content-disposition": f'attachment; filename="{name}"',
    }
    return StreamingResponse(
        services.files.content(row), media_type="application/octet-stream", headers=headers
    )


@router.post("/dashboard/files/{file_id}/delete")
async def delete_file(request: Request, file_id: str) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, session, account, _ = found
    try:
        await services.files.delete(account.id, file_id)
    except TokenDockError:
        return not_found(request, session, "file")
    return redirect(f"/dashboard/files?deleted={file_id}")
