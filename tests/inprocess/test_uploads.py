"""The Uploads API in-process, through the official openai SDK: parts completed in the order
named (not the order sent), the MD5 and declared size checked, unlisted parts freed, cancel and
expiry freeing the parts' quota, another account's upload not found, the part bound."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import openai
import pytest
from sqlalchemy import func, select
from starlette.requests import ClientDisconnect

from tests.inprocess.site import Site, Tenant, error_of, running_site
from tokendock.storage.tables import blob_chunks, upload_parts
from tokendock.storage.tables import files as file_rows

PARTS = [b"first line\n", b"second line\n", b"third line\n"]
WHOLE = b"".join(PARTS)


async def chunks(site: Site) -> int:
    engine = site.services.files.store.engine
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(blob_chunks))).scalar_one())


async def used(site: Site, tenant: Tenant) -> int:
    return await site.services.files.quota.used(tenant.account_id)


async def start(tenant: Tenant, size: int = len(WHOLE)) -> str:
    upload = await tenant.oai.uploads.create(
        bytes=size, filename="in.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    assert upload.status == "pending" and upload.object == "upload" and upload.file is None
    assert upload.expires_at == upload.created_at + 3600
    return upload.id


async def test_parts_complete_in_the_order_named(site: Site) -> None:
    alice = await site.tenant()
    upload_id = await start(alice)
    # Sent out of order; the completion names the order.
    ids = {}
    for n in (2, 0, 1):
        part = await alice.oai.uploads.parts.create(upload_id=upload_id, data=PARTS[n])
        assert part.object == "upload.part" and part.upload_id == upload_id
        ids[n] = part.id
    assert await used(site, alice) == len(WHOLE)
    done = await alice.oai.uploads.complete(
        upload_id=upload_id,
        part_ids=[ids[0], ids[1], ids[2]],
        md5=hashlib.md5(WHOLE).hexdigest(),
    )
    assert done.status == "completed" and done.file is not None
    assert (done.file.bytes, done.file.filename, done.file.purpose) == (
        len(WHOLE),
        "in.jsonl",
        "batch",
    )
    assert (await alice.oai.files.content(done.file.id)).content == WHOLE
    assert await used(site, alice) == len(WHOLE)  # moved from the parts to the file
    await alice.oai.files.delete(done.file.id)
    assert await used(site, alice) == 0 and await chunks(site) == 0


async def test_md5_size_and_part_ids_are_checked(site: Site) -> None:
    alice = await site.tenant()
    upload_id = await start(alice)
    ids = [(await alice.oai.uploads.parts.create(upload_id=upload_id, data=p)).id for p in PARTS]
    cases = [
        ({"part_ids": ids, "md5": "0" * 32}, "md5"),
        ({"part_ids": ids[:2]}, "bytes"),
        ({"part_ids": [*ids[:2], ids[0]]}, "part_ids"),
        ({"part_ids": [*ids[:2], "part_unknown"]}, "part_ids"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await alice.oai.uploads.complete(upload_id=upload_id, **body)  # type: ignore[arg-type]
        assert caught.value.body["param"] == param, body  # type: ignore[index]
    # A spare part, not named: dropped at completion, its bytes freed.
    spare = await alice.oai.uploads.parts.create(upload_id=upload_id, data=b"")
    done = await alice.oai.uploads.complete(upload_id=upload_id, part_ids=ids)
    assert done.file is not None and spare.id not in ids
    assert await used(site, alice) == len(WHOLE)
    # Completed: nothing more can change it.
    with pytest.raises(openai.BadRequestError):
        await alice.oai.uploads.parts.create(upload_id=upload_id, data=b"more")
    with pytest.raises(openai.BadRequestError):
        await alice.oai.uploads.cancel(upload_id)


async def test_cancel_and_expiry_free_the_parts(site: Site) -> None:
    alice = await site.tenant()
    upload_id = await start(alice)
    await alice.oai.uploads.parts.create(upload_id=upload_id, data=PARTS[0])
    assert await used(site, alice) == len(PARTS[0])
    cancelled = await alice.oai.uploads.cancel(upload_id)
    assert cancelled.status == "cancelled"
    assert await used(site, alice) == 0 and await chunks(site) == 0

    later = await start(alice)
    await alice.oai.uploads.parts.create(upload_id=later, data=PARTS[1])
    files = site.services.files
    real = files.clock
    files.clock = lambda: real() + timedelta(hours=1, seconds=1)
    try:
        with pytest.raises(openai.BadRequestError):
            await alice.oai.uploads.parts.create(upload_id=later, data=PARTS[2])
        assert await files.sweep() == 1
    finally:
        files.clock = real
    assert await used(site, alice) == 0 and await chunks(site) == 0


async def test_another_accounts_upload_is_not_found(site: Site) -> None:
    alice, bob = await site.tenant(), await site.tenant()
    upload_id = await start(alice)
    for path in (f"/v1/uploads/{upload_id}/cancel", "/v1/uploads/upload_nope/cancel"):
        resp = await site.http.post(path, headers=bob.auth)
        assert resp.status_code == 404 and error_of(resp)["param"] == "upload_id"
    with pytest.raises(openai.NotFoundError):
        await bob.oai.uploads.parts.create(upload_id=upload_id, data=b"x")
    with pytest.raises(openai.NotFoundError):
        await bob.oai.uploads.complete(upload_id=upload_id, part_ids=["part_x"])
    assert (await alice.oai.uploads.cancel(upload_id)).status == "cancelled"


async def test_bounds(tmp_path: Path) -> None:
    bounds = {"file_max_bytes": 2_000_000, "upload_part_max_bytes": 1_000_000}
    async with running_site(tmp_path, bounds) as site:
        alice = await site.tenant()
        with pytest.raises(openai.BadRequestError) as caught:
            await start(alice, 2_000_001)
        assert caught.value.body["param"] == "bytes"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as caught:
            await alice.oai.uploads.create(
                bytes=10, filename="in.csv", mime_type="text/csv", purpose="batch"
            )
        assert caught.value.body["param"] == "filename"  # type: ignore[index]
        upload_id = await start(alice, 1_500_000)
        with pytest.raises(openai.APIStatusError) as big:
            await alice.oai.uploads.parts.create(upload_id=upload_id, data=b"x" * 1_000_001)
        assert big.value.status_code == 413
        assert big.value.body["param"] == "data"  # type: ignore[index]
        await alice.oai.uploads.parts.create(upload_id=upload_id, data=b"x" * 1_000_000)
        with pytest.raises(openai.BadRequestError) as over:
            await alice.oai.uploads.parts.create(upload_id=upload_id, data=b"x" * 600_000)
        assert over.value.body["param"] == "data"  # type: ignore[index]
        assert await used(site, alice) == 1_000_000 and await chunks(site) == 1


async def test_a_body_cut_short_leaves_nothing(site: Site) -> None:
    """A client that leaves mid-body (the body's stream raises): no part, no file, no chunk,
    no quota used — for a file as for an upload's part."""
    alice = await site.tenant()

    async def cut() -> AsyncIterator[bytes]:
        yield b"x" * 3_000_000  # three chunks written
        raise ClientDisconnect()

    with pytest.raises(ClientDisconnect):
        await site.services.files.receive(alice.account_id, "a.jsonl", cut())
    upload_id = await start(alice, 5_000_000)
    uploads = site.app.state.uploads
    with pytest.raises(ClientDisconnect):
        await uploads.add_part(alice.account_id, upload_id, cut())
    assert await chunks(site) == 0 and await used(site, alice) == 0
    engine = site.services.files.store.engine
    async with engine.connect() as conn:
        for table in (file_rows, upload_parts):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar() == 0
