"""Files and Uploads through the official openai SDK against the real server, on SQLite and
PostgreSQL (what is stored, and the strings a client sends, depend on the database): create,
list (pagination, purpose), retrieve, content, delete; uploads in parts completed in the order
named with their MD5, cancelled; another account's ids are 404; a NUL in a file name is a 400;
over the size bound a 413 and over the quota a 400, nothing left either way; a client that
leaves mid-body leaves no file, no chunk and no quota used; a 50 MB upload grows the server's
memory by less than 20 MB (streamed to the database, never held)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from tests.e2e.server import BACKENDS, Server, start_server
from tokendock.storage.db import create_engine
from tokendock.storage.tables import account_storage, accounts, blob_chunks, files, upload_parts

MB = 1_000_000
FILE_MAX = 52 * MB
QUOTA = 60 * MB
JSONL = b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


@pytest.fixture(scope="module", params=BACKENDS)
def bounded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose files are at most FILE_MAX bytes, and accounts store at most QUOTA."""
    workdir = tmp_path_factory.mktemp(f"files-{request.param}")
    env = {
        "TOKENDOCK_FILE_MAX_BYTES": str(FILE_MAX),
        "TOKENDOCK_STORAGE_QUOTA_BYTES": str(QUOTA),
    }
    srv = start_server(workdir, env, backend=request.param)
    yield srv
    srv.stop()


def tenant(server: Server) -> tuple[openai.OpenAI, str, int]:
    """A fresh account's client, its key and its account id."""
    email = f"files-{secrets.token_hex(4)}@example.com"
    key = server.new_key(email, "1")
    client = openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=120)
    account = query(server, select(accounts.c.id).where(accounts.c.email == email))
    return client, key, int(account)


def query(server: Server, statement: Any) -> Any:
    async def run() -> Any:
        engine = create_engine(server.database_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(statement)).scalar()
        finally:
            await engine.dispose()

    return asyncio.run(run())


def left_behind(server: Server, account_id: int) -> tuple[int, int, int]:
    """(the account's file rows of any status, bytes counted in its quota, chunks that belong
    to no file and no upload part)."""
    rows = query(
        server, select(func.count()).select_from(files).where(files.c.account_id == account_id)
    )
    used = query(
        server, select(account_storage.c.used).where(account_storage.c.account_id == account_id)
    )
    owners = select(files.c.id).union(select(upload_parts.c.id))
    orphans = query(
        server,
        select(func.count(func.distinct(blob_chunks.c.blob_id))).where(
            blob_chunks.c.blob_id.not_in(owners)
        ),
    )
    return int(rows), int(used or 0), int(orphans)


def form(boundary: str, filename: str, purpose: str = "batch") -> tuple[bytes, bytes]:
    """A multipart body's head (the purpose, the file part's headers) and tail."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


def stream_upload(server: Server, key: str, size: int) -> httpx.Response:
    """POST /v1/files of `size` bytes, sent as generated (chunked): the client holds 1 MB."""
    boundary = secrets.token_hex(8)
    head, tail = form(boundary, "big.jsonl")
    piece = (b'{"x": 1}' * 131072)[: 1 << 20]

    def body() -> Iterator[bytes]:
        yield head
        sent = 0
        while sent < size:
            chunk = piece[: size - sent]
            sent += len(chunk)
            yield chunk
        yield tail

    headers = {
        "Authorization": f"Bearer {key}",
        "content-type": f"multipart/form-data; boundary={boundary}",
    }
    return httpx.post(server.v1 + "/files", content=body(), headers=headers, timeout=120)


def rss(server: Server) -> int:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_files_round_trip(bounded: Server) -> None:
    client, _, _ = tenant(bounded)
    made = [
        client.files.create(file=(f"f{n}.jsonl", JSONL), purpose="batch" if n % 2 else "user_data")
        for n in range(3)
    ]
    assert all(f.status == "processed" and f.bytes == len(JSONL) for f in made)
    assert [f.id for f in client.files.list(limit=1)] == [f.id for f in reversed(made)]
    assert [f.id for f in client.files.list(purpose="batch").data] == [made[1].id]
    assert client.files.retrieve(made[0].id).filename == "f0.jsonl"
    assert client.files.content(made[2].id).content == JSONL
    assert client.files.delete(made[0].id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.content(made[0].id)


def test_uploads_round_trip(bounded: Server) -> None:
    client, _, account = tenant(bounded)
    parts = [b"a" * 1500 + b"\n", b"b" * (1 << 20) + b"\n", b"c\n"]
    whole = b"".join(parts)
    upload = client.uploads.create(
        bytes=len(whole), filename="in.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    ids = {n: client.uploads.parts.create(upload_id=upload.id, data=parts[n]).id for n in (1, 2, 0)}
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(
            upload_id=upload.id, part_ids=[ids[0], ids[1], ids[2]], md5="0" * 32
        )
    done = client.uploads.complete(
        upload_id=upload.id,
        part_ids=[ids[0], ids[1], ids[2]],
        md5=hashlib.md5(whole).hexdigest(),
    )
    assert done.status == "completed" and done.file is not None
    assert client.files.content(done.file.id).content == whole
    other = client.uploads.create(
        bytes=10, filename="x.txt", mime_type="text/plain", purpose="user_data"
    )
    client.uploads.parts.create(upload_id=other.id, data=b"12345")
    assert client.uploads.cancel(other.id).status == "cancelled"
    client.files.delete(done.file.id)
    assert left_behind(bounded, account) == (0, 0, 0)


def test_other_accounts_and_bad_names(bounded: Server) -> None:
    alice, _, _ = tenant(bounded)
    bob, bob_key, _ = tenant(bounded)
    mine = alice.files.create(file=("a.jsonl", JSONL), purpose="batch")
    with pytest.raises(openai.NotFoundError) as caught:
        bob.files.retrieve(mine.id)
    assert caught.value.body["param"] == "file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        bob.files.delete(mine.id)
    upload = alice.uploads.create(
        bytes=1, filename="a.jsonl", mime_type="text/plain", purpose="batch"
    )
    with pytest.raises(openai.NotFoundError):
        bob.uploads.cancel(upload.id)
    boundary = "nul"
    head, tail = form(boundary, "a\x00b.jsonl")
    resp = httpx.post(
        bounded.v1 + "/files",
        content=head + JSONL + tail,
        headers={
            "Authorization": f"Bearer {bob_key}",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "file"
    resp = httpx.get(
        bounded.v1 + "/files/file-a%00b", headers={"Authorization": f"Bearer {bob_key}"}
    )
    assert resp.status_code == 404


def test_size_bound_quota_and_memory(bounded: Server) -> None:
    client, key, account = tenant(bounded)
    client.files.create(file=("warm.jsonl", JSONL), purpose="batch")  # code paths warmed
    over = stream_upload(bounded, key, FILE_MAX + 1)
    assert over.status_code == 413 and over.json()["error"]["code"] == "file_too_large"
    assert over.json()["error"]["param"] == "file"
    assert left_behind(bounded, account) == (1, len(JSONL), 0)
    before = rss(bounded)
    resp = stream_upload(bounded, key, 50 * MB)
    assert resp.status_code == 200, resp.text
    grown = rss(bounded) - before
    assert grown < 20 * MB, f"the server grew by {grown / MB:.1f} MB for a 50 MB upload"
    big = resp.json()["id"]
    assert client.files.retrieve(big).bytes == 50 * MB

    quota = stream_upload(bounded, key, 20 * MB)
    assert quota.status_code == 400
    assert quota.json()["error"]["code"] == "storage_quota_exceeded"
    assert left_behind(bounded, account)[:2] == (2, 50 * MB + len(JSONL))
    client.files.delete(big)
    assert left_behind(bounded, account)[1] == len(JSONL)


def test_a_client_leaving_mid_body_leaves_nothing(bounded: Server) -> None:
    _, key, account = tenant(bounded)
    boundary = secrets.token_hex(8)
    head, tail = form(boundary, "cut.jsonl")
    size = 6 * MB
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.sendall(
            (
                "POST /v1/files HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n"
            ).encode()
            + head
        )
        sock.sendall(b"x" * (size // 2))
        deadline = time.monotonic() + 10
        while left_behind(bounded, account)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left_behind(bounded, account)[0] == 1  # the server was writing the file
    deadline = time.monotonic() + 10
    while left_behind(bounded, account) != (0, 0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left_behind(bounded, account) == (0, 0, 0)
