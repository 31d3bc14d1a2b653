"""Pass-through routes (web/api/media.py, media_forms.py) in front of a recording media upstream
(bench/mock_media.py, served in this loop): the official openai SDK on the app, SQLite. What the
upstream received is what the client sent (the file's bytes, the deployment's model name), what
the client got is what the upstream answered, and each request is billed by its model's unit
from what the upstream reported — exactly, or estimated from the audio header when it reported
nothing."""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from bench.mock_media import make_app
from bench.mock_media_replies import wav_bytes

from tests.inprocess.conftest import registry_of
from tests.inprocess.fake_backend import FakeBackend
from tests.inprocess.site import Site, Tenant, error_of, running_site
from tokendock.catalog import DeploymentSpec, ModelSpec, PriceSpec
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.upstream.client import Deployment
from tokendock.inference.upstream.passthrough import PassThroughBackend
from tokendock.inference.upstream.pool import UpstreamPool
from tokendock.inference.upstream.router import RetryPolicy, Router
from tokendock.inference.upstream.transport import UpstreamTransport

SECOND, CHARACTER, IMAGE, REQUEST = 100, 15, 20_000, 500  # micro-credits per unit


def media_specs(base: str) -> list[ModelSpec]:
    def upstream(model_id: str, name: str, task: str, price: PriceSpec, **bounds: Any) -> Any:
        deployment = {"name": "mock", "base_url": base, "model": name}
        return ModelSpec(
            id=model_id,
            engine="upstream",
            task=task,  # type: ignore[arg-type]
            price=price,
            deployments=[deployment],  # type: ignore[list-item]
            **bounds,
        )

    return [
        upstream(
            "whisper",
            "openai/whisper-large-v3",
            "transcription",
            PriceSpec(unit="second", per_unit="0.0001"),
            max_file_bytes=400_000,
            max_audio_seconds=60,
        ),
        upstream(
            "tts",
            "tts-1",
            "speech",
            PriceSpec(unit="character", per_unit="0.000015"),
            max_characters=200,
        ),
        upstream(
            "painter", "dall-e-2", "image", PriceSpec(unit="image", per_unit="0.02"), max_images=4
        ),
        upstream(
            "guard",
            "omni-moderation-latest",
            "moderation",
            PriceSpec(unit="request", per_unit="0.0005"),
        ),
        upstream("ranker", "bge-rerank", "rerank", PriceSpec(input="2", output="0")),
    ]


@pytest.fixture
async def mock() -> AsyncIterator[str]:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def site(tmp_path: Path, mock: str) -> AsyncIterator[Site]:
    def registry(chat: FakeBackend, embed: FakeBackend) -> ModelRegistry:
        fakes = registry_of(chat, embed)
        transport = UpstreamTransport()
        policy = RetryPolicy(probe_every=0, retries=1, backoff=0.01)
        specs = {s.id: s for s in fakes.specs()}
        backends: dict[str, Any] = {s.id: fakes.backend(s.id) for s in fakes.specs()}
        routers = {}
        for spec in media_specs(mock + "/v1"):
            deployments = [Deployment.from_spec(d) for d in spec.deployments]
            router = routers[spec.id] = Router(spec.id, deployments, policy, transport)
            specs[spec.id] = spec
            backends[spec.id] = PassThroughBackend(router, spec)
        return ModelRegistry(specs, backends, UpstreamPool(routers, transport))

    async with running_site(tmp_path, more=registry) as running:
        yield running


async def received(mock: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        records: list[dict[str, Any]] = (await http.get(mock + "/_received")).json()
    return records


async def mode(mock: str, name: str | None) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(mock + "/_mode", json={"mode": name})).raise_for_status()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def spent(site: Site, tenant: Tenant, before: int) -> int:
    await site.services.pipeline._gate.drain()
    return before - await site.balance(tenant)


async def test_a_transcription_reaches_the_upstream_whole_and_is_billed_by_the_second(
    site: Site, mock: str
) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    audio = wav_bytes(3.2)
    text = await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", audio))
    assert text.text
    got = (await received(mock))[-1]
    assert got["model"] == "openai/whisper-large-v3"
    assert got["files"][0]["sha256"] == hashlib.sha256(audio).hexdigest()
    assert got["files"][0]["size"] == len(audio)
    assert await spent(site, t, before) == 4 * SECOND  # 3.2 s reported, rounded up
    row = (await site.usage(t))[-1]
    assert (row["endpoint"], row["prompt_tokens"], row["estimated"]) == (
        "audio.transcriptions",
        4,
        False,
    )
    listed = (await site.http.get("/v1/usage", headers=t.auth)).json()["data"][0]
    assert (listed["unit"], listed["prompt_tokens"]) == ("second", 4)
    await site.settled_cleanly()


async def test_formats_and_streams_come_back_as_the_upstream_sent_them(
    site: Site, mock: str
) -> None:
    t = await site.tenant()
    audio = wav_bytes(1.0)
    plain = await t.oai.audio.transcriptions.with_raw_response.create(
        model="whisper", file=("a.wav", audio), response_format="text"
    )
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.headers["x-request-id"].startswith("req_")
    assert int(plain.headers["x-tokendock-hold"].replace(".", "")) == 60 * SECOND  # the worst
    assert sha(plain.http_response.content) == (await received(mock))[-1]["response"]["sha256"]
    stream = await t.oai.audio.transcriptions.create(
        model="whisper", file=("a.wav", audio), stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "transcript.text.done"
    translated = await t.oai.audio.translations.create(model="whisper", file=("a.wav", audio))
    assert translated.text
    assert (await received(mock))[-1]["path"] == "/v1/audio/translations"
    await site.settled_cleanly()


async def test_a_form_whose_model_comes_after_the_file_is_spooled(site: Site, mock: str) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    audio = wav_bytes(2.0)
    boundary = "b" + secrets.token_hex(8)
    body = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="x.wav"\r\n'
        f"content-type: audio/wav\r\n\r\n"
    ).encode() + audio
    body += f'\r\n--{boundary}\r\ncontent-disposition: form-data; name="model"\r\n\r\n'.encode()
    body += f"whisper\r\n--{boundary}--\r\n".encode()
    resp = await site.http.post(
        "/v1/audio/transcriptions",
        content=body,
        headers={**t.auth, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status_code == 200, resp.text
    got = (await received(mock))[-1]
    assert got["files"][0]["sha256"] == hashlib.sha256(audio).hexdigest()
    assert got["model"] == "openai/whisper-large-v3"
    assert await spent(site, t, before) == 2 * SECOND


async def test_without_usage_the_seconds_come_from_the_wav_header(site: Site, mock: str) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    await mode(mock, "no_usage")
    await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(5.5)))
    assert await spent(site, t, before) == 6 * SECOND
    row = (await site.usage(t))[-1]
    assert row["estimated"] is True and row["prompt_tokens"] == 6


async def test_speech_images_moderation_and_rerank_are_billed_by_their_units(
    site: Site, mock: str
) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    speech = await t.oai.audio.speech.create(model="tts", voice="alloy", input="Hello there")
    assert sha(speech.content) == (await received(mock))[-1]["response"]["sha256"]
    assert await spent(site, t, before) == len("Hello there") * CHARACTER

    before = await site.balance(t)
    images = await t.oai.images.generate(model="painter", prompt="a cat", n=2)
    assert len(images.data or []) == 2
    assert await spent(site, t, before) == 2 * IMAGE

    before = await site.balance(t)
    verdict = await t.oai.moderations.create(input="hello")  # no model: the first moderation one
    assert verdict.results
    assert (await received(mock))[-1]["model"] == "omni-moderation-latest"
    assert await spent(site, t, before) == REQUEST

    before = await site.balance(t)
    ranked = await site.post(
        "/v1/rerank", {"model": "ranker", "query": "cats", "documents": ["a cat", "a car"]}, t
    )
    assert ranked.status_code == 200, ranked.text
    tokens = ranked.json()["usage"]["total_tokens"]
    assert await spent(site, t, before) == 2 * tokens  # 2 credits per million tokens
    scored = await site.post("/v1/score", {"model": "ranker", "text_1": "a", "text_2": "b"}, t)
    assert scored.status_code == 200, scored.text
    endpoints = [row["endpoint"] for row in await site.usage(t)]
    assert endpoints == ["audio.speech", "images.generations", "moderations", "rerank", "score"]
    await site.settled_cleanly()


async def test_refusals_name_the_field_and_bill_nothing(site: Site, mock: str) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    wrong = await site.post("/v1/audio/speech", {"model": "fake-model", "input": "x"}, t)
    assert wrong.status_code == 400
    assert error_of(wrong)["param"] == "model" and error_of(wrong)["code"] == "model_not_supported"
    too_many = await site.post(
        "/v1/images/generations", {"model": "painter", "prompt": "a", "n": 9}, t
    )
    assert too_many.status_code == 400 and error_of(too_many)["param"] == "n"
    long = await site.post("/v1/audio/speech", {"model": "tts", "input": "x" * 201}, t)
    assert long.status_code == 400 and error_of(long)["param"] == "input"
    with pytest.raises(openai.APIStatusError) as big:
        await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(20.0)))
    assert big.value.status_code == 413
    missing = await site.post("/v1/rerank", {"model": "ranker", "query": "q"}, t)
    assert missing.status_code == 400 and error_of(missing)["param"] == "documents"
    await site.services.pipeline._gate.drain()
    assert await site.balance(t) == before
    assert await site.usage(t) == []
    await site.settled_cleanly()


async def test_an_upstream_failure_is_an_envelope_and_free(site: Site, mock: str) -> None:
    t = await site.tenant()
    before = await site.balance(t)
    await mode(mock, "fail")
    failed = await site.post("/v1/moderations", {"model": "guard", "input": "x"}, t)
    assert failed.status_code in (502, 503), failed.text
    error_of(failed)
    with pytest.raises(openai.APIStatusError) as upload:
        await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", wav_bytes(1.0)))
    assert upload.value.status_code in (502, 503)
    await site.services.pipeline._gate.drain()
    assert await site.balance(t) == before
    await site.settled_cleanly()


async def test_a_live_upload_is_retried_elsewhere_while_none_of_it_went_out(
    tmp_path: Path, mock: str
) -> None:
    """Two deployments, one refusing connections: a streamed upload that could not connect
    sent nothing, so it goes to the other one — every request answered, each file whole."""
    dead = f"http://127.0.0.1:{unused_port()}/v1"
    spec = media_specs(mock + "/v1")[0]
    deployments = [
        # Weighted so it is always picked first while healthy.
        {"name": "dead", "base_url": dead, "model": "openai/whisper-large-v3", "weight": 100},
        {"name": "mock", "base_url": mock + "/v1", "model": "openai/whisper-large-v3"},
    ]
    spec = spec.model_copy(update={"deployments": [DeploymentSpec(**d) for d in deployments]})

    def registry(chat: FakeBackend, embed: FakeBackend) -> ModelRegistry:
        transport = UpstreamTransport()
        policy = RetryPolicy(probe_every=0, retries=2, backoff=0.01)
        router = Router(
            spec.id, [Deployment.from_spec(d) for d in spec.deployments], policy, transport
        )
        fakes = registry_of(chat, embed)
        specs = {**{s.id: s for s in fakes.specs()}, spec.id: spec}
        backends: dict[str, Any] = {s.id: fakes.backend(s.id) for s in fakes.specs()}
        backends[spec.id] = PassThroughBackend(router, spec)
        return ModelRegistry(specs, backends, UpstreamPool({spec.id: router}, transport))

    async with running_site(tmp_path, more=registry) as site:
        t = await site.tenant()
        audio = wav_bytes(1.0)
        for _ in range(4):
            text = await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", audio))
            assert text.text
        got = [r for r in await received(mock) if r["path"] == "/v1/audio/transcriptions"]
        assert len(got) == 4
        assert {r["files"][0]["sha256"] for r in got} == {sha(audio)}
        assert {row["deployment"] for row in await site.usage(t)} == {"mock"}
        tried = site.services.models.router("whisper")
        assert tried is not None and tried.deployments[0].health.last_error  # it was tried
        await site.settled_cleanly()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_route_no_model_serves_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:  # no pass-through models at all
        t = await site.tenant()
        with pytest.raises(openai.BadRequestError) as refused:
            await t.oai.audio.transcriptions.create(model="whisper", file=("a.wav", b"RIFF"))
        assert refused.value.code == "model_not_supported"
        assert refused.value.param == "model"
        speech = await site.post("/v1/audio/speech", {"model": "fake-model", "input": "x"}, t)
        assert error_of(speech)["code"] == "model_not_supported"
