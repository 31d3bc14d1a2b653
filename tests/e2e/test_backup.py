"""`tokendock backup` while the real server takes traffic, `tokendock restore` into a fresh
database: the ledger verifies, and the copy is one consistent moment of the live database —
every entry and usage row in it is in the live one unchanged, except the holds that were in
flight at that moment, which the restore released in full. A server then runs on the copy."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.money import assert_adds_up
from tests.e2e.server import BACKENDS, DATA_DIR, ROOT, Server, new_database, start_server
from tests.e2e.upstreams import Upstream, model_entry, start_fault

MESSAGES = [{"role": "user", "content": "say hello"}]


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault"))
    yield upstream
    upstream.stop()


def tokendock(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENDOCK_DATA_DIR": str(DATA_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "tokendock", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


class Traffic:
    """Requests from several keys, streamed and not, some slow, until stopped (own thread)."""

    def __init__(self, srv: Server, keys: list[str]):
        self.srv, self.keys = srv, keys
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.srv.v1, timeout=30) as http:
            await asyncio.gather(*(self._worker(http, i) for i in range(6)))

    async def _worker(self, http: httpx.AsyncClient, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.keys[i % len(self.keys)]}"}
        n = 0
        while not self._stop.is_set():
            n += 1
            model = "up-slowstream" if (i + n) % 3 == 0 else "up-ok"
            body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": n % 2 == 0}
            resp = await http.post("/chat/completions", json=body, headers=headers)
            if resp.status_code != 200 or (body["stream"] and "[DONE]" not in resp.text):
                self.failures.append(f"{resp.status_code} {resp.text[:200]}")
            self.done += 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_backup_under_traffic_restores_a_consistent_ledger(
    tmp_path: Path, fault: Upstream, backend: str
) -> None:
    models = tmp_path / "models.toml"
    deployments = {m: [{"name": m, "base_url": fault.v1, "model": m}] for m in ("ok", "slowstream")}
    models.write_text("".join(model_entry(f"up-{m}", d) for m, d in deployments.items()))
    srv = start_server(tmp_path, {"TOKENDOCK_MODELS_FILE": str(models)}, backend=backend)
    copy = tmp_path / ("backup.db" if backend == "sqlite" else "backup.dump")
    fresh = new_database(backend, tmp_path)
    try:
        grants = {f"backup-{i}-{secrets.token_hex(3)}@example.com": 2_000_000 for i in range(3)}
        keys = [srv.new_key(email, "2") for email in grants]
        with Traffic(srv, keys) as traffic:
            while traffic.done < 30:
                threading.Event().wait(0.1)
            out = srv.cli("backup", str(copy))  # mid-traffic
            at_backup = traffic.done
            while traffic.done < at_backup + 30:
                threading.Event().wait(0.1)
        assert not traffic.failures, traffic.failures[:3]
        assert "backup of" in out and copy.stat().st_size > 0
        again = tokendock("backup", str(copy), "--database-url", srv.database_url)
        assert again.returncode == 1 and "exists" in again.stderr  # never overwritten unasked

        # Never into a database that has data, unless forced.
        refused = tokendock("restore", str(copy), "--database-url", srv.database_url)
        assert refused.returncode == 1 and "not empty" in refused.stderr
        restored = tokendock("restore", str(copy), "--database-url", fresh)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "ledger OK" in restored.stdout
    finally:
        srv.stop()

    live = assert_adds_up(srv, grants)  # the live database after its traffic
    snapshot = assert_adds_up(replace(srv, database_url=fresh), {})  # and no hold open
    # Holds open at the moment of the backup were released by the restore, in full ...
    in_flight = {h for h, state in snapshot.holds.items() if live.holds[h] != state}
    assert in_flight and f"released {len(in_flight)} hold(s)" in restored.stdout
    for hold in in_flight:
        assert snapshot.entries["capture:" + hold][3] == 0
        assert snapshot.entries["release:" + hold][2] == -snapshot.entries["hold:" + hold][2]
    # ... and everything else in the copy is in the live database, unchanged.
    for key, entry in snapshot.entries.items():
        if entry[4] not in in_flight:
            assert live.entries.get(key) == entry, key
    live_usage = {r["request_id"]: r["cost"] for r in live.usage}
    assert snapshot.usage and all(live_usage[r["request_id"]] == r["cost"] for r in snapshot.usage)
    assert len(snapshot.usage) < len(live.usage)
    for email in grants:  # each balance: the grant, less what the copy's usage rows charged
        assert snapshot.balances[email] == grants[email] - snapshot.charged(email)

    # A server runs on the copy; a key made before the backup works there.
    srv2 = start_server(tmp_path, {"TOKENDOCK_MODELS_FILE": str(models)}, database_url=fresh)
    try:
        headers = {"Authorization": f"Bearer {keys[0]}"}
        body = {"model": "up-ok", "messages": MESSAGES}
        resp = httpx.post(srv2.v1 + "/chat/completions", json=body, headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
    finally:
        srv2.stop()
    assert_adds_up(srv2, {})
