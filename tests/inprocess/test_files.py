"""The Files API in-process, through the official openai SDK and raw HTTP: OpenAI's shapes,
per-account isolation, the size bound and the storage quota (nothing left behind when refused),
expiry, list pagination, and client strings the database cannot hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import openai
import pytest
from sqlalchemy import func, select

from tests.inprocess.site import Site, Tenant, error_of, running_site
from tokendock.storage.tables import blob_chunks, files

JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


async def stored(site: Site) -> tuple[int, int]:
    """(file rows, chunk rows) in the database."""
    engine = site.services.files.store.engine
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(files))).scalar_one()
        chunks = (await conn.execute(select(func.count()).select_from(blob_chunks))).scalar_one()
    return rows, chunks


async def used(site: Site, tenant: Tenant) -> int:
    return await site.services.files.quota.used(tenant.account_id)


async def test_create_retrieve_content_list_delete(site: Site) -> None:
    alice = await site.tenant()
    created = await alice.oai.files.create(file=("in.jsonl", JSONL), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose) == (len(JSONL), "in.jsonl", "batch")
    assert created.status == "processed" and created.expires_at is None
    assert await used(site, alice) == len(JSONL)

    assert (await alice.oai.files.retrieve(created.id)).model_dump() == created.model_dump()
    content = await alice.oai.files.content(created.id)
    assert content.content == JSONL
    listed = await alice.oai.files.list()
    assert [f.id for f in listed.data] == [created.id]

    gone = await alice.oai.files.delete(created.id)
    assert (gone.id, gone.deleted) == (created.id, True)
    assert await used(site, alice) == 0
    assert await stored(site) == (0, 0)
    with pytest.raises(openai.NotFoundError):
        await alice.oai.files.retrieve(created.id)


async def test_another_accounts_file_is_not_found(site: Site) -> None:
    alice, bob = await site.tenant(), await site.tenant()
    mine = await alice.oai.files.create(file=("a.txt", b"secret"), purpose="user_data")
    for path in (f"/v1/files/{mine.id}", f"/v1/files/{mine.id}/content", "/v1/files/file-nope"):
        resp = await site.http.get(path, headers=bob.auth)
        assert resp.status_code == 404
        error = error_of(resp)
        assert error["param"] == "file_id" and error["type"] == "invalid_request_error"
    assert (await site.http.delete(f"/v1/files/{mine.id}", headers=bob.auth)).status_code == 404
    assert (await bob.oai.files.list()).data == []
    assert (await site.http.get("/v1/files")).status_code == 401
    assert (await alice.oai.files.retrieve(mine.id)).id == mine.id


async def test_list_pages_filters_and_orders(site: Site) -> None:
    alice = await site.tenant()
    made = []
    for n in range(5):
        purpose: Literal["batch", "user_data"] = "batch" if n % 2 == 0 else "user_data"
        name = f"f{n}.jsonl"
        made.append(await alice.oai.files.create(file=(name, JSONL), purpose=purpose))
    newest_first = [f.id for f in reversed(made)]
    first = await alice.oai.files.list(limit=2)
    assert [f.id for f in first.data] == newest_first[:2] and first.has_more
    everything = [f.id async for f in alice.oai.files.list(limit=2)]
    assert everything == newest_first
    oldest = await alice.oai.files.list(order="asc", limit=10)
    assert [f.id for f in oldest.data] == [f.id for f in made] and not oldest.has_more
    batch = await alice.oai.files.list(purpose="batch")
    assert [f.id for f in batch.data] == [made[4].id, made[2].id, made[0].id]
    resp = await site.http.get("/v1/files?after=file-unknown", headers=alice.auth)
    assert resp.status_code == 400 and error_of(resp)["param"] == "after"
    resp = await site.http.get("/v1/files?limit=0", headers=alice.auth)
    assert resp.status_code == 400 and error_of(resp)["param"] == "limit"


async def test_purposes_and_batch_files(site: Site) -> None:
    alice = await site.tenant()
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.oai.files.create(file=("out.jsonl", JSONL), purpose="batch_output")  # type: ignore[arg-type]
    assert caught.value.body["param"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.oai.files.create(file=("in.csv", JSONL), purpose="batch")
    assert caught.value.body["param"] == "file"  # type: ignore[index]
    resp = await site.http.post("/v1/files", files={"file": ("a.jsonl", JSONL)}, headers=alice.auth)
    assert resp.status_code == 400 and error_of(resp)["param"] == "purpose"
    resp = await site.http.post(
        "/v1/files", content=b"{}", headers={**alice.auth, "content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert await stored(site) == (0, 0)


async def test_a_file_name_the_database_cannot_hold_is_refused(site: Site) -> None:
    alice = await site.tenant()
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a\x00b.jsonl"\r\n\r\n'
        ).encode()
        + JSONL
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**alice.auth, "content-type": f"multipart/form-data; boundary={boundary}"}
    resp = await site.http.post("/v1/files", content=body, headers=headers)
    assert resp.status_code == 400 and error_of(resp)["param"] == "file"
    assert await stored(site) == (0, 0)


async def test_expiry(site: Site) -> None:
    alice = await site.tenant()
    kept = await alice.oai.files.create(
        file=("a.jsonl", JSONL),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert kept.expires_at == kept.created_at + 3600
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.oai.files.create(
            file=("a.jsonl", JSONL),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert caught.value.body["param"] == "expires_after"  # type: ignore[index]
    files_service = site.services.files
    real = files_service.clock
    files_service.clock = lambda: real() + timedelta(hours=2)
    try:
        with pytest.raises(openai.NotFoundError):
            await alice.oai.files.retrieve(kept.id)
        assert await files_service.sweep() == 1
    finally:
        files_service.clock = real
    assert await used(site, alice) == 0 and await stored(site) == (0, 0)


async def test_size_bound_and_quota_leave_nothing(tmp_path: Path) -> None:
    bounds = {"file_max_bytes": 3_000_000, "storage_quota_bytes": 4_000_000}
    async with running_site(tmp_path, bounds) as site:
        alice = await site.tenant()
        with pytest.raises(openai.APIStatusError) as caught:
            await alice.oai.files.create(file=("big.jsonl", b"x" * 3_000_001), purpose="batch")
        assert caught.value.status_code == 413
        assert caught.value.body["code"] == "file_too_large"  # type: ignore[index]
        assert caught.value.body["param"] == "file"  # type: ignore[index]
        assert await stored(site) == (0, 0) and await used(site, alice) == 0

        await alice.oai.files.create(file=("a.jsonl", b"y" * 2_500_000), purpose="batch")
        with pytest.raises(openai.BadRequestError) as caught:
            await alice.oai.files.create(file=("b.jsonl", b"z" * 2_000_000), purpose="batch")
        assert caught.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
        assert await stored(site) == (1, 3) and await used(site, alice) == 2_500_000


async def test_server_written_files_are_counted_never_refused(tmp_path: Path) -> None:
    async with running_site(tmp_path, {"storage_quota_bytes": 1000}) as site:
        alice = await site.tenant()

        async def lines() -> AsyncIterator[bytes]:
            for n in range(3):
                yield b"%d" % n * 1000

        row = await site.services.files.store_output(
            alice.account_id, "batch_output", "out.jsonl", lines()
        )
        assert row.bytes == 3000 and await used(site, alice) == 3000
        content = b"".join([c async for c in site.services.files.content(row)])
        assert content == b"0" * 1000 + b"1" * 1000 + b"2" * 1000
        listed = await alice.oai.files.list(purpose="batch_output")
        assert [f.id for f in listed.data] == [row.id]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x\r\nno colon here\r\n\r\nv\r\n--x--\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="file"'),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
            + b"y" * 10_000
            + b"\r\n--x--\r\n",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n\xff\xfe\r\n--x--\r\n',
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nb\x00tch\r\n--x--\r\n',
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="\xff.jsonl"\r\n\r\n'
            b"{}\r\n--x--\r\n",
        ),
    ],
)
async def test_malformed_forms_are_a_400_and_keep_nothing(
    site: Site, content_type: str, body: bytes
) -> None:
    alice = await site.tenant()
    headers = {**alice.auth, "content-type": content_type}
    resp = await site.http.post("/v1/files", content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    error_of(resp)
    assert await stored(site) == (0, 0)
