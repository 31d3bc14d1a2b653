"""Deployments dying and coming back under load: failover without a client-visible error,
cool-down of a failing deployment, and recovery through the active health probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import Server, start_server
from tests.e2e.upstreams import Upstream, model_entry, start_fault

MESSAGES = [{"role": "user", "content": "say hello"}]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Upstream, Upstream]]:
    # A little delay, so requests are in flight on both when one dies.
    a, b = start_fault(tmp_path, delay=0.03), start_fault(tmp_path, delay=0.03)
    yield a, b
    a.stop()
    b.stop()


def start_gateway(tmp_path: Path, a: Upstream, b: Upstream, **settings: str) -> Server:
    catalog = tmp_path / "models.toml"
    catalog.write_text(
        model_entry(
            "pair",
            [
                {"name": "a", "base_url": a.v1, "model": "ok"},
                {"name": "b", "base_url": b.v1, "model": "ok"},
            ],
        )
    )
    env = {"TOKENDOCK_MODELS_FILE": str(catalog), **settings}
    return start_server(tmp_path, env)


def deployments(gateway: Server) -> dict[str, str]:
    ready = httpx.get(gateway.base_url + "/ready").json()
    return {d["name"]: d["state"] for d in ready["upstreams"]["pair"]}


def test_a_deployment_killed_under_load_loses_no_request(
    tmp_path: Path, pair: tuple[Upstream, Upstream]
) -> None:
    a, b = pair
    gateway = start_gateway(tmp_path, a, b)
    try:
        client = openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30
        )
        done = 0
        failures: list[BaseException] = []
        a_third_done = asyncio.Event()

        async def one() -> None:
            nonlocal done
            try:
                reply = await client.chat.completions.create(model="pair", messages=MESSAGES)
                assert reply.choices[0].message.content
            except BaseException as exc:  # counted, not raised: the assertion is below
                failures.append(exc)
            done += 1
            if done == 60:
                a_third_done.set()

        async def run() -> None:
            gate = asyncio.Semaphore(8)

            async def bounded() -> None:
                async with gate:
                    await one()

            tasks = [asyncio.create_task(bounded()) for _ in range(200)]
            await a_third_done.wait()
            a.process.kill()  # SIGKILL: in-flight requests on it are cut
            await asyncio.gather(*tasks)

        asyncio.run(run())
        assert done == 200
        assert failures == []
        assert b.stats()["ok"] >= 140
        assert deployments(gateway)["a"] == "cooling_down"
    finally:
        gateway.stop()


def test_failing_deployment_cools_down_and_recovers(
    tmp_path: Path, pair: tuple[Upstream, Upstream]
) -> None:
    a, b = pair
    gateway = start_gateway(
        tmp_path,
        a,
        b,
        TOKENDOCK_UPSTREAM_PROBE_SECONDS="0.3",
        TOKENDOCK_UPSTREAM_COOLDOWN_SECONDS="60",
        TOKENDOCK_UPSTREAM_ALLOWED_FAILS="2",
    )
    try:
        client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
        a.override("fail500")
        for _ in range(12):  # every request still succeeds: retried on b
            client.chat.completions.create(model="pair", messages=MESSAGES)
        assert deployments(gateway) == {"a": "cooling_down", "b": "healthy"}
        failed_on_a = a.stats().get("fail500", 0)
        assert failed_on_a <= 2  # the probe may have cooled it down before any request
        for _ in range(10):  # cooling down: a gets nothing
            client.chat.completions.create(model="pair", messages=MESSAGES)
        assert a.stats().get("fail500", 0) == failed_on_a

        a.override(None)  # a is fixed; the next probe ends its cool-down early
        deadline = time.monotonic() + 5
        while deployments(gateway)["a"] != "healthy" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert deployments(gateway)["a"] == "healthy"
        for _ in range(20):
            client.chat.completions.create(model="pair", messages=MESSAGES)
        assert a.stats().get("ok", 0) >= 3
    finally:
        gateway.stop()
