"""The gateway in front of the fault-injecting upstream (tests/e2e/fault_upstream.py), driven
with the official SDK: re-stamped answers, billing from upstream usage, retries before the first
byte, errors after it, 4xx pass-through, key hygiene, timeouts, 503 when all are down."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server import BACKENDS, Server, free_port, start_server
from tests.e2e.upstreams import UPSTREAM_KEY, Upstream, cost, model_entry, start_fault, usage_row

REDIS_URL = os.environ.get("TOKENDOCK_TEST_REDIS_URL")
MESSAGES = [{"role": "user", "content": "say hello"}]
PROMPT_ESTIMATE = 3 + 4 * 2  # MESSAGES without a tokenizer: ceil(9 / 4), plus 4 a turn (two)
PROMPT_TOKENS = 6  # the fault upstream's count: words + 4 per message
ANSWER = "Hello from the fault upstream."
ANSWER_TOKENS = 6


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault"))
    yield upstream
    upstream.stop()


def catalog(fault: Upstream, path: Path) -> Path:
    def dep(mode: str, **extra: Any) -> dict[str, Any]:
        return {"name": mode, "base_url": fault.v1, "model": mode, **extra}

    keyed = {"api_key_env": "FAULT_UPSTREAM_KEY"}
    closed = f"http://127.0.0.1:{free_port()}/v1"
    entries = [
        model_entry("up-ok", [dep("ok", **keyed)]),
        model_entry("up-nousage", [dep("nousage")]),
        model_entry("up-zero", [dep("zerousage")]),
        model_entry("up-retry", [dep("fail500"), dep("ok")]),
        model_entry("up-400", [dep("bad400")]),
        model_entry("up-401", [dep("auth401", **keyed)]),
        model_entry("up-429", [dep("busy429"), dep("ok")]),
        model_entry("up-slow", [dep("slowfirst", first_token_timeout=0.5), dep("ok")]),
        model_entry("up-hang", [dep("hang", first_token_timeout=1.0, total_timeout=1.0)]),
        model_entry("up-reset", [dep("resetmid")]),
        model_entry("up-slowstream", [dep("slowstream")]),
        model_entry("up-down", [{"name": "nobody", "base_url": closed}]),
    ]
    path.write_text("\n".join(entries))
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, fault: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    env = {
        "TOKENDOCK_MODELS_FILE": str(catalog(fault, workdir / "models.toml")),
        "FAULT_UPSTREAM_KEY": UPSTREAM_KEY,
        "TOKENDOCK_UPSTREAM_RETRY_DEADLINE": "10",
    }
    srv = start_server(workdir, env, backend=request.param)
    yield srv
    srv.stop()


@pytest.fixture
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30)


def test_answer_is_restamped_and_billed_from_upstream_usage(
    gateway: Server, client: openai.OpenAI, fault: Upstream
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="up-ok", messages=MESSAGES)
    reply = raw.parse()
    assert reply.id.startswith("chatcmpl-") and reply.id != "upstream-id"
    assert reply.model == "up-ok"
    assert reply.choices[0].message.content == ANSWER
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        PROMPT_TOKENS,
        ANSWER_TOKENS,
    )
    charged = cost(PROMPT_TOKENS, ANSWER_TOKENS)
    assert raw.headers["x-tokendock-cost"] == f"{charged / 1e6:.6f}"
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert row["cost_micro_credits"] == charged
    assert (row["deployment"], row["estimated"], row["status"]) == ("ok", False, "ok")
    assert row["finish_reason"] == "stop"
    # The gateway sent the deployment's key to the upstream, not the client's.
    assert fault.stats().get(f"auth:Bearer {UPSTREAM_KEY}", 0) >= 1


def test_stream_without_usage_request_drops_the_upstream_usage_chunk(
    client: openai.OpenAI,
) -> None:
    chunks = list(client.chat.completions.create(model="up-ok", messages=MESSAGES, stream=True))
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"up-ok"}
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_with_usage_ends_with_usage_and_cost(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="up-ok",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 6)
    assert last.usage.model_extra == {"cost": f"{cost(6, 6) / 1e6:.6f}"}


def test_text_completions_are_proxied_too(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="up-ok", prompt="say hello")
    assert reply.id.startswith("cmpl-") and reply.model == "up-ok"
    assert reply.choices[0].text == ANSWER
    streamed = list(client.completions.create(model="up-ok", prompt="say hello", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == ANSWER


def test_no_usage_from_upstream_is_estimated_and_marked(
    gateway: Server, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="up-nousage", messages=MESSAGES)
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert row["estimated"] is True
    # The estimate a count gives too (upstream/backend.py estimate_prompt): ceil(9 / 4) = 3
    # characters' tokens, and 4 a turn for the template (the user's turn, the answer's opening).
    assert row["prompt_tokens"] == PROMPT_ESTIMATE
    assert row["completion_tokens"] == 8  # ceil(len(ANSWER) / 4)
    assert row["cost_micro_credits"] == cost(PROMPT_ESTIMATE, 8)


def test_explicit_zero_usage_is_a_real_zero(gateway: Server, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="up-zero", messages=MESSAGES)
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["completion_tokens"], row["estimated"]) == (0, False)
    assert row["cost_micro_credits"] == cost(PROMPT_TOKENS, 0)


def test_5xx_is_retried_on_another_deployment(client: openai.OpenAI) -> None:
    for _ in range(8):
        reply = client.chat.completions.create(model="up-retry", messages=MESSAGES)
        assert reply.choices[0].message.content == ANSWER


def test_429_is_retried_elsewhere(client: openai.OpenAI, fault: Upstream) -> None:
    for _ in range(4):
        reply = client.chat.completions.create(model="up-429", messages=MESSAGES)
        assert reply.choices[0].message.content == ANSWER


def test_slow_first_token_is_retried_within_its_timeout(client: openai.OpenAI) -> None:
    for _ in range(3):
        started = time.monotonic()
        chunks = list(
            client.chat.completions.create(model="up-slow", messages=MESSAGES, stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        assert time.monotonic() - started < 2.5  # never waited out the 3 s first token


def test_client_errors_pass_through_unretried(
    gateway: Server, client: openai.OpenAI, fault: Upstream
) -> None:
    before = fault.stats().get("bad400", 0)
    balance = client.get("/credits", cast_to=object)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="up-400", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 400
    assert error.param == "messages" and error.code == "bad_thing"
    assert "upstream says" in error.message
    assert error.response.headers["x-request-id"].startswith("req_")
    assert fault.stats()["bad400"] == before + 1
    assert client.get("/credits", cast_to=object) == balance  # the hold was released


def test_upstream_auth_failure_is_a_502_that_never_leaks_the_key(
    gateway: Server, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="up-401", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 502 and error.code == "upstream_auth_failed"
    assert UPSTREAM_KEY not in error.response.text
    assert UPSTREAM_KEY not in gateway.log()
    assert "api_key_env" in gateway.log()  # the operator is told what to check


def test_hung_upstream_times_out_with_504(client: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="up-hang", messages=MESSAGES, stream=True)
    assert caught.value.status_code == 504 and caught.value.code == "upstream_timeout"
    assert time.monotonic() - started < 8


def test_all_deployments_down_is_503(client: openai.OpenAI) -> None:
    errors = []
    for _ in range(2):  # the first try finds it down, the second finds it cooling down
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="up-down", messages=MESSAGES)
        errors.append(caught.value)
    assert errors[0].status_code in (502, 503)
    last = errors[1]
    assert last.status_code == 503 and last.code == "no_healthy_deployment"
    assert int(last.response.headers["retry-after"]) >= 1
    assert last.response.headers["x-request-id"].startswith("req_")


def test_failure_mid_stream_is_an_error_event_and_bills_what_was_sent(
    gateway: Server, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="up-reset", messages=MESSAGES, stream=True
    )
    received: list[str] = []

    def read_all() -> None:
        for c in raw.parse():
            received.append(c.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        read_all()
    assert "upstream" in caught.value.message
    assert "".join(received) == "Hello from the"
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["status"], row["estimated"], row["completion_tokens"]) == ("error", True, 3)
    assert row["cost_micro_credits"] == cost(PROMPT_ESTIMATE, 3)


def test_client_disconnect_closes_the_upstream_request(
    gateway: Server, client: openai.OpenAI, fault: Upstream
) -> None:
    before = fault.stats().get("abandoned", 0)
    raw = client.chat.completions.with_raw_response.create(
        model="up-slowstream", messages=MESSAGES, stream=True
    )
    stream = raw.parse()
    pieces = 0
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            pieces += 1
        if pieces == 3:
            break
    stream.close()
    deadline = time.monotonic() + 5
    while fault.stats().get("abandoned", 0) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fault.stats().get("abandoned", 0) == before + 1
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            row = usage_row(gateway, raw.headers["x-request-id"])
            break
        except AssertionError:
            time.sleep(0.1)
    assert row["status"] == "client_disconnected" and row["estimated"] is True
    assert 3 <= row["completion_tokens"] < 42


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tokens_credits_and_deployment_health(
    gateway: Server, client: openai.OpenAI
) -> None:
    before = httpx.get(gateway.base_url + "/metrics").text
    client.chat.completions.create(model="up-ok", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="up-400", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="up-down", messages=MESSAGES)
    resp = httpx.get(gateway.base_url + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = resp.text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("tokendock_requests_total", model="up-ok", status="200") == 1
    assert grew("tokendock_requests_total", model="up-400", status="400") == 1
    assert grew("tokendock_tokens_total", model="up-ok", kind="prompt") == PROMPT_TOKENS
    assert grew("tokendock_tokens_total", model="up-ok", kind="completion") == ANSWER_TOKENS
    charged = cost(PROMPT_TOKENS, ANSWER_TOKENS)
    assert grew("tokendock_credits_captured_micro_total", model="up-ok") == charged
    assert grew("tokendock_request_seconds_count", model="up-ok") == 1
    assert metric(after, "tokendock_deployment_healthy", model="up-ok", deployment="ok") == 1
    assert metric(after, "tokendock_deployment_healthy", model="up-down", deployment="nobody") == 0
    assert (
        metric(after, "tokendock_deployment_cooldowns_total", model="up-down", deployment="nobody")
        >= 1
    )
    assert "tokendock_requests_in_flight" in after


def test_json_log_has_one_line_per_request_without_secrets_or_prompts(
    fault: Upstream, tmp_path: Path
) -> None:
    import orjson

    catalog_file = tmp_path / "models.toml"
    catalog_file.write_text(
        model_entry("up-ok", [{"name": "ok", "base_url": fault.v1, "model": "ok"}])
    )
    env = {"TOKENDOCK_MODELS_FILE": str(catalog_file), "TOKENDOCK_LOG_FORMAT": "json"}
    gateway = start_server(tmp_path, env)
    try:
        client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0)
        secret_prompt = "my secret prompt 42"
        raw = client.chat.completions.with_raw_response.create(
            model="up-ok", messages=[{"role": "user", "content": secret_prompt}]
        )
        wrong = openai.OpenAI(base_url=gateway.v1, api_key="td-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="up-ok", messages=MESSAGES)
    finally:
        gateway.stop()
    lines = [orjson.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "tokendock.access"]
    ours = next(line for line in access if line["request_id"] == raw.headers["x-request-id"])
    assert ours["status"] == 200 and ours["model"] == "up-ok" and ours["deployment"] == "ok"
    assert ours["key"].startswith(gateway.key[:7]) and ours["key"].endswith(gateway.key[-4:])
    assert ours["prompt_tokens"] > 0 and ours["completion_tokens"] == ANSWER_TOKENS
    assert isinstance(ours["latency_ms"], int) and ours["path"] == "/v1/chat/completions"
    refused = [line for line in access if line["status"] == 401]
    assert refused and refused[0]["error"] == "invalid_api_key"
    text = gateway.log()
    assert gateway.key not in text.replace(f"Your API key (shown once): {gateway.key}", "")
    assert secret_prompt not in text


@pytest.mark.skipif(not REDIS_URL, reason="TOKENDOCK_TEST_REDIS_URL is not set")
def test_metrics_add_up_over_workers(fault: Upstream, tmp_path: Path) -> None:
    assert REDIS_URL
    catalog_file = tmp_path / "models.toml"
    catalog_file.write_text(
        model_entry("up-ok", [{"name": "ok", "base_url": fault.v1, "model": "ok"}])
    )
    env = {
        "TOKENDOCK_MODELS_FILE": str(catalog_file),
        "TOKENDOCK_WORKERS": "2",
        "TOKENDOCK_RATE_LIMIT_BACKEND": "redis",
        "TOKENDOCK_REDIS_URL": REDIS_URL,
        "TOKENDOCK_REDIS_PREFIX": f"td:test:{secrets.token_hex(4)}:",
        "TOKENDOCK_METRICS_TOKEN": "scrape-me",
    }
    gateway = start_server(tmp_path, env)
    try:
        for _ in range(30):  # a new connection each: the kernel spreads them over both workers
            with openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0) as client:
                client.chat.completions.create(model="up-ok", messages=MESSAGES)
        assert httpx.get(gateway.base_url + "/metrics").status_code == 401
        scrape = httpx.get(
            gateway.base_url + "/metrics", headers={"Authorization": "Bearer scrape-me"}
        )
        assert metric(scrape.text, "tokendock_requests_total", model="up-ok", status="200") == 30
        assert metric(scrape.text, "tokendock_tokens_total", model="up-ok", kind="completion") == (
            30 * ANSWER_TOKENS
        )
    finally:
        gateway.stop()
