"""Faults under load, with the money checked afterwards: the database's connections killed
mid-burst (PostgreSQL), Redis gone (the redis rate-limit backend, both policies), SIGKILL during
a burst of 50 requests, and a full disk under SQLite. Every answer is a success or an OpenAI
envelope; the server recovers; `ledger verify` passes, no hold stays open, and each balance is
its grant less what its usage rows were charged. (tests/e2e/test_billing.py has SIGKILL with
embedded-engine streams; here the burst mixes streamed and non-streamed upstream requests.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.money import assert_adds_up, read
from tests.e2e.server import BACKENDS, POSTGRES_URL, Server, free_port, start_server
from tests.e2e.upstreams import Upstream, model_entry, start_fault

MESSAGES = [{"role": "user", "content": "say hello"}]
GRANT = 3_000_000


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault"))
    yield upstream
    upstream.stop()


def start(
    tmp_path: Path,
    fault: Upstream,
    backend: str = "sqlite",
    database_url: str | None = None,
    **env: str,
) -> Server:
    models = tmp_path / "models.toml"
    deployments = {m: [{"name": m, "base_url": fault.v1, "model": m}] for m in ("ok", "slowstream")}
    models.write_text("".join(model_entry(f"up-{m}", d) for m, d in deployments.items()))
    settings = {
        "TOKENDOCK_MODELS_FILE": str(models),
        "TOKENDOCK_HOLD_TTL_SECONDS": "3",  # holds whose settlement failed: swept soon
        "TOKENDOCK_SWEEP_SECONDS": "1",
        **env,
    }
    return start_server(tmp_path, settings, backend=backend, database_url=database_url)


def funded(srv: Server) -> tuple[str, str]:
    email = f"fault-{secrets.token_hex(4)}@example.com"
    return email, srv.new_key(email, str(GRANT / 1e6))


@dataclass
class Result:
    status: int = 0  # 0: the connection failed
    request_id: str = ""
    complete: bool = False  # a 200 answer received whole ([DONE] on a stream)
    error: dict[str, Any] | None = None


def body(i: int) -> dict[str, Any]:
    model = "up-slowstream" if i % 3 == 0 else "up-ok"
    return {"model": model, "messages": MESSAGES, "stream": i % 2 == 0}


async def one(http: httpx.AsyncClient, payload: dict[str, Any]) -> Result:
    out = Result()
    try:
        async with http.stream("POST", "/chat/completions", json=payload) as resp:
            out.status, out.request_id = resp.status_code, resp.headers.get("x-request-id", "")
            text = (await resp.aread()).decode()
    except httpx.TransportError:
        return out
    if out.status != 200:
        out.error = json.loads(text)["error"]
    elif payload["stream"]:
        events = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
        errors = [json.loads(e)["error"] for e in events[:-1] if '"error"' in e]
        out.error = errors[0] if errors else None
        out.complete = bool(events) and events[-1] == "[DONE]" and not errors
    else:
        out.complete = bool(json.loads(text)["choices"])
    return out


async def burst(srv: Server, key: str, n: int, start: int = 0) -> list[Result]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=srv.v1, headers=headers, timeout=30) as http:
        return list(await asyncio.gather(*(one(http, body(start + i)) for i in range(n))))


def check_answers(results: list[Result], *, cut: bool = False) -> None:
    """Each answer is whole, or an OpenAI envelope with a 5xx (a stream: its error event);
    only when the process was killed (`cut`) may a connection just end."""
    for r in results:
        if r.status == 0 or (r.status == 200 and not r.complete and r.error is None):
            assert cut, r
            continue
        if r.error is not None:
            assert set(r.error) == {"message", "type", "param", "code"}, r
            assert r.status == 200 or r.status >= 500, r
        assert r.request_id.startswith("req_"), r


def recovered(srv: Server, key: str) -> None:
    """Within 20 s every request of a burst succeeds again."""
    deadline = time.monotonic() + 20
    while True:
        results = asyncio.run(burst(srv, key, 6))
        if all(r.complete for r in results):
            return
        assert time.monotonic() < deadline, results
        time.sleep(0.5)


def settled(srv: Server, grants: dict[str, int]) -> None:
    """Holds whose request lost its settlement are swept within seconds; then it adds up."""
    deadline = time.monotonic() + 30
    while read(srv.database_url).open_holds and time.monotonic() < deadline:
        time.sleep(0.5)
    assert_adds_up(srv, grants)


def has_usage(srv: Server, results: list[Result]) -> None:
    """Every request answered whole was billed: it has its usage row."""
    rows = {r["request_id"] for r in read(srv.database_url).usage}
    for r in results:
        if r.complete:
            assert r.request_id in rows, r


# -- (a) the database's connections killed mid-burst ----------------------------------------


@pytest.mark.skipif(not POSTGRES_URL, reason="needs TOKENDOCK_TEST_POSTGRES_URL")
def test_postgres_connections_killed_mid_burst(tmp_path: Path, fault: Upstream) -> None:
    import asyncpg  # type: ignore[import-untyped]

    assert POSTGRES_URL
    srv = start(tmp_path, fault, "postgres")
    database = srv.database_url.rsplit("/", 1)[1]

    async def kill_connections() -> int:
        conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
        try:
            rows = await conn.fetch(
                # Only the server's own sessions: an autovacuum worker in the same database
                # belongs to the superuser and may not be terminated by this role.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND usename = current_user",
                database,
            )
            return len(rows)
        finally:
            await conn.close()

    try:
        email, key = funded(srv)

        async def scenario() -> tuple[list[Result], int]:
            # Three bursts back to back while every connection to the database is killed
            # every 50 ms: some die idle in a pool, some in the middle of a query.
            running = asyncio.ensure_future(
                asyncio.gather(*(burst(srv, key, 40, start=i) for i in range(3)))
            )
            killed = 0
            while not running.done():
                killed += await kill_connections()
                await asyncio.sleep(0.05)
            return [r for results in await running for r in results], killed

        results, killed = asyncio.run(scenario())
        assert killed > 0
        check_answers(results)
        recovered(srv, key)
        assert httpx.get(srv.base_url + "/health").status_code == 200
        has_usage(srv, results)
        settled(srv, {email: GRANT})
    finally:
        srv.stop()


# -- (b) Redis gone ---------------------------------------------------------------------------


def redis_server(port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(
        [*args, "--appendonly", "no", "--dir", str(log_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="needs redis-server")
@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_redis_gone_and_back(tmp_path: Path, fault: Upstream, fail_open: bool) -> None:
    port = free_port()
    redis = redis_server(port, tmp_path)
    tiers = {"default": {"rpm": 10_000, "tpm": 10_000_000, "concurrent": 8}}
    srv = start(
        tmp_path,
        fault,
        TOKENDOCK_RATE_LIMIT_BACKEND="redis",
        TOKENDOCK_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        TOKENDOCK_RATE_LIMIT_FAIL_OPEN=str(fail_open).lower(),
        TOKENDOCK_RATE_TIERS=json.dumps(tiers),
    )
    try:
        email, key = funded(srv)
        assert all(r.complete for r in asyncio.run(burst(srv, key, 8)))

        async def kill_mid_burst() -> list[Result]:
            running = asyncio.ensure_future(burst(srv, key, 8))  # slow streams in flight
            await asyncio.sleep(0.5)
            redis.kill()
            redis.wait(5)
            return await running

        in_flight = asyncio.run(kill_mid_burst())
        check_answers(in_flight)
        without = asyncio.run(burst(srv, key, 8, start=1))
        check_answers(without)
        if fail_open:
            assert all(r.complete for r in without), without
        else:
            assert {r.status for r in without} == {503}, without
            assert {r.error["code"] for r in without if r.error} == {"rate_limiter_unavailable"}
        assert httpx.get(srv.base_url + "/health").status_code == 200

        redis = redis_server(port, tmp_path)  # back, empty
        recovered(srv, key)
        for _ in range(3):  # all 8 concurrency slots free: nothing leaked
            assert all(r.complete for r in asyncio.run(burst(srv, key, 8)))
        has_usage(srv, in_flight + without)
        settled(srv, {email: GRANT})
    finally:
        srv.stop()
        redis.kill()
        redis.wait(5)


# -- (c) SIGKILL during a burst of 50 -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_a_burst_of_50(tmp_path: Path, fault: Upstream, backend: str) -> None:
    srv = start(tmp_path, fault, backend, TOKENDOCK_HOLD_TTL_SECONDS="3600")
    try:
        email, key = funded(srv)

        async def kill_mid_burst() -> list[Result]:
            running = asyncio.ensure_future(burst(srv, key, 50))
            await asyncio.sleep(1.0)  # the fast ones done, the slow streams running
            srv.process.send_signal(signal.SIGKILL)
            return await running

        results = asyncio.run(kill_mid_burst())
        srv.process.wait(10)
        check_answers(results, cut=True)
        assert any(r.complete for r in results) and not all(r.complete for r in results)
        assert read(srv.database_url).open_holds > 0  # the dead process left holds behind
        has_usage(srv, results)
        # The same instance again: it releases its predecessor's holds before serving.
        srv = start_server(tmp_path, srv.env, database_url=srv.database_url, port=srv.port)
        assert read(srv.database_url).open_holds == 0
        assert_adds_up(srv, {email: GRANT})
        recovered(srv, key)
    finally:
        srv.stop()


# -- (d) a full disk under SQLite ---------------------------------------------------------------


def mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    return done.returncode == 0


def fill(where: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_sqlite_disk_full(tmp_path: Path, fault: Upstream) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "16m"):
        pytest.skip("needs root and tmpfs mounts for a real full filesystem")
    srv: Server | None = None
    try:
        url = f"sqlite+aiosqlite:///{disk / 'td.db'}"
        srv = start(tmp_path, fault, database_url=url)
        email, key = funded(srv)
        assert all(r.complete for r in asyncio.run(burst(srv, key, 6)))
        filler = fill(disk)
        full = []
        for round_ in range(4):  # enough writes to need new pages
            full += asyncio.run(burst(srv, key, 25, start=round_))
            check_answers(full)
            assert httpx.get(srv.base_url + "/health", timeout=5).status_code == 200
        assert any(r.status >= 500 or r.error for r in full), "the disk never filled up"
        filler.unlink()  # space is back
        recovered(srv, key)
        has_usage(srv, full)
        settled(srv, {email: GRANT})
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["umount", "-l", str(disk)])
