"""Schemathesis against the real server, from the OpenAPI document it publishes (/openapi.json).

Every operation, positive and negative data, with a funded key, with a key of a few
micro-credits (most generation refused with 402), and with no key or a wrong one. Whatever the
input: no status ≥ 500; every error is the OpenAI envelope with an `x-request-id`; responses
match their documented status codes, content types, headers and schemas; invalid data is
refused with a 4xx.

Generation stays cheap on 2 cores: the funded key's cases ask for at most a few tokens (the
schema stays true; the test picks cheap cases), the tiny key's balance refuses the rest. Every
failure is collected (request and response) and reported at the end, not shrunk.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import orjson
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import BACKENDS, ROOT, Server, start_server

pytestmark = pytest.mark.e2e

MODEL = "gemma-3-270m"
EMBEDDING_MODEL = "all-minilm-l6-v2"  # what POST /v1/embeddings' positive cases name
CHEAP_TOKENS = 2  # the funded key's cases generate at most this many tokens per choice
CHEAP_N = 2
# Examples per operation, generation mode and key (7 operations with inputs); scaled by
# TOKENDOCK_FUZZ_SCALE (e.g. 10 for a long run, 0.1 for a quick look), and by BUDGET_OPERATIONS
# / the number of operations once there are more: the run's time stays what CI can afford as
# the API grows (each operation still gets its cases of every key and mode).
SCALE = float(os.environ.get("TOKENDOCK_FUZZ_SCALE", "1"))
EXAMPLES = {"funded": 80, "tiny": 80, "none": 30, "wrong": 15}
BUDGET_OPERATIONS = 30
# Dropped from positive cases: refused by design (400 unsupported_parameter), or — tools,
# functions, response_format — arbitrary generated schemas (400s naming the keyword; their real
# use is tests/e2e/test_structured_sdk.py). The generated cases that keep them test that.
REFUSED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "response_format",
    "suffix",
    "best_of",
)
UNLIMITED = '{"default": {"rpm": 0, "tpm": 0, "concurrent": 0}}'
# Positive cases of a stored chat completion's operations name one the funded key stored before
# fuzzing (so they reach 200; another key's get 404); each DELETE one of its own pool.
STORED: dict[str, list[str]] = {"keep": [], "delete": []}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH_PROBES = 5  # per operation: answered 2xx, is it refused without the key, or a wrong one?
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
LEAKS = ("Traceback", 'File "', str(ROOT), "site-packages", ".py:", '.py"')


@dataclass
class Tally:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    auth_probes: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: dict[str, str] = field(default_factory=dict)  # one report per distinct problem

    def fail(self, kind: str, case: Case[Any], response: Response, detail: str) -> None:
        key = f"{case.operation.label} {kind} {response.status_code}"
        if key not in self.failures:
            self.failures[key] = (
                f"{key}: {detail}\n  request: {case.as_curl_command()}\n"
                f"  response: {response.status_code} {response.content[:600]!r}"
            )


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, float]]:
    """The server, and the share of EXAMPLES to run on it (PostgreSQL: a quarter, for time)."""
    backend = request.param
    srv = start_server(
        tmp_path_factory.mktemp(f"fuzz-{backend}"),
        backend=backend,
        env={"TOKENDOCK_RATE_TIERS": UNLIMITED},
    )
    yield srv, SCALE * (1.0 if backend == "sqlite" else 0.25)
    srv.stop()


def envelope_problem(response: Response, path: str) -> str | None:
    """Why this response breaks the error contract, or None. Anthropic's Messages API
    (/v1/messages…) answers errors in Anthropic's envelope instead of OpenAI's."""
    ids = response.headers.get("x-request-id", [])
    if len(ids) != 1 or not REQUEST_ID.match(ids[0]):
        return "not exactly one x-request-id header"
    text = response.content.decode("utf-8", "replace")
    if any(leak in text for leak in LEAKS):
        return "the body shows a server path or a traceback"
    if response.status_code < 400:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return "an error body that is not JSON"
    if path.startswith("/v1/messages"):
        return anthropic_problem(body)
    error = body.get("error") if isinstance(body, dict) else None
    if set(body) != {"error"} or not isinstance(error, dict):
        return "an error body that is not the OpenAI envelope"
    if set(error) != {"message", "type", "param", "code"}:
        return "envelope fields are not message, type, param, code"
    if not (isinstance(error["message"], str) and isinstance(error["type"], str)):
        return "envelope message / type are not strings"
    return None


def anthropic_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) != {"type", "error"} or body["type"] != "error":
        return "an error body that is not Anthropic's envelope"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"type", "message"}:
        return "Anthropic envelope fields are not type, message"
    if not (isinstance(error["message"], str) and isinstance(error["type"], str)):
        return "envelope message / type are not strings"
    return None


def aim(case: Case[Any], use_model: bool, cheap: bool) -> None:
    """Positive cases: half name the real model (a random name is only ever a 404) and drop the
    features TokenDock refuses by design, so that they reach admission and the engine; the
    funded key's also ask for a few tokens and choices (its balance would let them run long).
    The other half, and every negative case, go as generated."""
    if use_model and "model_id" in (case.path_parameters or {}):
        case.path_parameters["model_id"] = MODEL
    pool = STORED["delete" if case.method.upper() == "DELETE" else "keep"]
    if use_model and pool and "completion_id" in (case.path_parameters or {}):
        case.path_parameters["completion_id"] = pool.pop() if pool is STORED["delete"] else pool[0]
    body: Any = case.body
    if case.operation.path == "/v1/messages/batches" and isinstance(body, dict):
        aim_batch(body)  # its lines run in the background: a few, each a few tokens
    if not isinstance(body, dict) or "model" not in body or not use_model:
        return
    body["model"] = EMBEDDING_MODEL if case.operation.path == "/v1/embeddings" else MODEL
    for name in REFUSED:
        body.pop(name, None)
    responses = case.operation.path.startswith("/v1/responses")
    if responses:
        aim_responses(body)
    if body.get("stream") is not True:
        body.pop("stream_options", None)
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            if message.get("role") in ("tool", "function"):
                message["role"] = "user"
            if message.get("content") is None:
                message["content"] = "hi"
            if isinstance(message["content"], list):
                message["content"] = [p for p in message["content"] if p.get("type") == "text"]
    if not cheap:
        return
    limits = [
        k
        for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
        if isinstance(body.get(k), int)
    ]
    for k in limits:
        body[k] = max(min(body[k], CHEAP_TOKENS), 0 if "prompt" in body else 1)
    if not limits:
        body["max_output_tokens" if responses else "max_tokens"] = CHEAP_TOKENS
    for k in ("n", "best_of"):
        if isinstance(body.get(k), int):
            body[k] = min(body[k], CHEAP_N)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        body["prompt"] = prompt[:CHEAP_N]  # a list of prompts: each is a choice


def aim_batch(body: dict[str, Any]) -> None:
    """A Message Batch's positive case: at most CHEAP_N requests of at most CHEAP_TOKENS each
    (a valid one runs on the engine after the response, for the rest of the session)."""
    requests_ = body.get("requests")
    if not isinstance(requests_, list):
        return
    body["requests"] = requests_[:CHEAP_N]
    for item in body["requests"]:
        params = item.get("params") if isinstance(item, dict) else None
        if isinstance(params, dict) and isinstance(params.get("max_tokens"), int):
            params["max_tokens"] = max(min(params["max_tokens"], CHEAP_TOKENS), 1)


def stored_completion(srv: Server) -> str:
    """A chat completion stored (`store: true`) with the server's funded key: its id."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    auth = {"Authorization": f"Bearer {srv.key}"}
    reply = requests.post(srv.v1 + "/chat/completions", json={**ask, "store": True}, headers=auth)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def aim_responses(body: dict[str, Any]) -> None:
    """Responses API positive cases: a text `input` (generated items are almost never valid
    ones), no `previous_response_id` (a random id is only ever a 404) and no `text.format`
    (arbitrary schemas, as `response_format` above)."""
    body.pop("previous_response_id", None)
    body.pop("text", None)
    if not isinstance(body.get("input"), str):
        body["input"] = "hi"


def strip_auth(case: Case[Any]) -> None:
    """Drop the generated Authorization header: ours (or none) is sent explicitly instead."""
    for name in [h for h in case.headers or {} if h.lower() == "authorization"]:
        del case.headers[name]


def negated_auth(case: Case[Any]) -> bool:
    description = case.meta.phase.data.description if case.meta is not None else None
    return "Authorization" in (description or "")


def run_operation(
    tally: Tally,
    session: requests.Session,
    base_url: str,
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    examples: int,
    cheap: bool,
) -> None:

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("TOKENDOCK_FUZZ_RANDOM"),  # CI: the same cases
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), use_model=st.booleans())
    def fuzz(case: Case[Any], use_model: bool) -> None:
        if mode.is_positive:
            aim(case, use_model, cheap)
        # A case made invalid by its Authorization header is sent with ours: not negative then.
        negative = mode.is_negative and not negated_auth(case)
        checks = [*CHECKS, negative_data_rejection] if negative else CHECKS
        label = case.operation.label
        if tally.auth_probes[label] < AUTH_PROBES:  # each probe re-sends the request twice
            checks = [*checks, ignored_auth]
        strip_auth(case)
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
        if ignored_auth in checks and 200 <= response.status_code < 300:
            tally.auth_probes[label] += 1
        tally.cases += 1
        tally.by_status[response.status_code] = tally.by_status.get(response.status_code, 0) + 1
        tally.by_operation[case.operation.label][response.status_code] += 1
        if os.environ.get("FUZZ_DEBUG") and response.status_code == 400 and mode.is_positive:
            print(case.operation.label, response.content[:200])
        problem = envelope_problem(response, case.operation.path)
        if problem:
            tally.fail("envelope", case, response, problem)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except BaseExceptionGroup as exc:  # FailureGroup: one or more checks failed
            tally.fail(type(exc).__name__, case, response, str(exc)[:1500])

    started = time.monotonic()
    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        assert mode.is_negative  # e.g. GET /health: nothing in it can be made invalid
    finally:
        tally.seconds[operation.label] += time.monotonic() - started


def test_fuzz_every_operation(fuzz_server: tuple[Server, float]) -> None:
    srv, scale = fuzz_server
    tiny = srv.new_key("tiny@example.com", "0.000003")  # 3 micro-credits: a few tokens at most
    STORED["keep"][:] = [stored_completion(srv)]
    STORED["delete"][:] = [stored_completion(srv) for _ in range(3)]
    schema = schemathesis.openapi.from_url(srv.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions",
        "GET /v1/chat/completions",
        "GET /v1/chat/completions/{completion_id}",
        "POST /v1/chat/completions/{completion_id}",
        "DELETE /v1/chat/completions/{completion_id}",
        "GET /v1/chat/completions/{completion_id}/messages",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /v1/models",
        "GET /v1/models/{model_id}",
        "GET /v1/credits",
        "POST /v1/credits/redeem",
        "GET /v1/usage",
        "POST /v1/responses",
        "POST /v1/responses/input_tokens",
        "GET /v1/responses/{response_id}",
        "DELETE /v1/responses/{response_id}",
        "GET /v1/responses/{response_id}/input_items",
        "POST /v1/responses/{response_id}/cancel",
    }
    keys: dict[str, tuple[dict[str, str], bool]] = {  # headers, cheap
        "funded": ({"Authorization": f"Bearer {srv.key}"}, True),
        "tiny": ({"Authorization": f"Bearer {tiny}"}, False),
        "none": ({}, False),
        "wrong": ({"Authorization": "Bearer td-" + "x" * 48}, False),
    }
    scale *= min(1.0, BUDGET_OPERATIONS / len(operations))
    tally = Tally()
    started = time.monotonic()
    with requests.Session() as session:
        for who, (headers, cheap) in keys.items():
            # Without a valid key a request is refused before its body is read: positive only.
            modes = [GenerationMode.POSITIVE]
            if who in ("funded", "tiny"):
                modes.append(GenerationMode.NEGATIVE)
            for operation in operations:
                for mode in modes:
                    run_operation(
                        tally,
                        session,
                        srv.base_url,
                        operation,
                        mode,
                        headers,
                        max(1, int(EXAMPLES[who] * scale)),
                        cheap,
                    )
    elapsed = time.monotonic() - started
    summary = f"{tally.cases} cases in {elapsed:.0f} s; statuses {sorted(tally.by_status.items())}"
    for label, statuses in tally.by_operation.items():
        summary += f"\n  {label} ({tally.seconds[label]:.0f} s): {sorted(statuses.items())}"
    print(summary)
    Path(srv.log_path.parent / "schemathesis-summary.txt").write_text(summary + "\n")
    assert tally.cases >= 1800 * scale, summary
    assert not tally.failures, summary + "\n\n" + "\n\n".join(tally.failures.values())
    assert not any(status >= 500 for status in tally.by_status), summary
    assert "unhandled error" not in srv.log(), srv.log()[-5000:]
