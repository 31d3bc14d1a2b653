"""The official JavaScript SDK (npm `openai`, pinned in tests/js/package.json and installed by
`make test`) against the real server: a tool call (required, and named through the SDK's stream
helper), a JSON-schema answer, and embeddings the SDK asks for as base64 by default and decodes.
tests/js/sdk.mjs makes each request and prints what the SDK returned; the checks are here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import jsonschema
import numpy as np
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import ROOT, Server
from tests.e2e.test_structured_sdk import PERSON_ASK, PERSON_SCHEMA, TOOLS, WEATHER_ASK

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database

JS_DIR = ROOT / "tests" / "js"
EMBEDDING_MODEL = "all-minilm-l6-v2"


def run_js(
    server: Server, check: str, request: dict[str, Any], script: str = "sdk.mjs"
) -> dict[str, Any]:
    """One request through the JavaScript SDK; what it returned. Fails (never skips) without
    Node.js or the installed SDK: CI has both."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js 20+ is needed for the JavaScript SDK test (`node` is not on PATH)")
    if not (JS_DIR / "node_modules" / "openai" / "package.json").exists():
        pytest.fail(
            "the JavaScript SDK is not installed: run `make test` (or `npm ci` in tests/js)"
        )
    env = {**os.environ, "TOKENDOCK_BASE_URL": server.v1, "TOKENDOCK_API_KEY": server.key}
    done = subprocess.run(
        [node, script, check, json.dumps({"request": request})],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"node {script} {check} failed:\n{done.stderr}{done.stdout}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_required_tool_call(server: Server) -> None:
    ask = {"model": MODEL, "messages": WEATHER_ASK, "tools": TOOLS, "tool_choice": "required"}
    result = run_js(server, "tool", {**ask, "parallel_tool_calls": False, "max_tokens": 200})
    assert result["finish_reason"] == "tool_calls"
    assert len(result["tool_calls"]) == 1
    call = result["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    jsonschema.validate(result["arguments"][0], schemas[call["function"]["name"]])


def test_named_tool_call_streamed_through_the_sdk_helper(server: Server) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    ask: dict[str, Any] = {
        "model": MODEL,
        "messages": WEATHER_ASK,
        "tools": TOOLS,
        "tool_choice": named,
    }
    ask |= {"parallel_tool_calls": False, "max_tokens": 120, "temperature": 0}
    whole = run_js(server, "tool", ask)
    streamed = run_js(server, "tool-stream", ask)
    for result in (whole, streamed):
        assert result["finish_reason"] == "tool_calls"
        assert [c["function"]["name"] for c in result["tool_calls"]] == ["get_weather"]
        jsonschema.validate(result["arguments"][0], TOOLS[0]["function"]["parameters"])
    assert streamed["chunks"] > 3  # really streamed, reassembled by the SDK
    assert streamed["arguments"] == whole["arguments"]  # temperature 0: the same call


def test_json_schema_answer(server: Server) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    ask = {"model": MODEL, "messages": PERSON_ASK, "response_format": schema}
    result = run_js(server, "json", {**ask, "max_tokens": 200, "temperature": 1})
    assert result["finish_reason"] == "stop"
    jsonschema.validate(result["parsed"], PERSON_SCHEMA)
    jsonschema.validate(json.loads(result["content"]), PERSON_SCHEMA)


def test_embeddings_base64_by_default(server: Server, client: openai.OpenAI) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "Rain falls softly."]
    one = run_js(server, "embed", {"model": EMBEDDING_MODEL, "input": texts[0]})
    batch = run_js(server, "embed", {"model": EMBEDDING_MODEL, "input": texts})
    assert one["sent"][0]["encoding_format"] == "base64"  # the SDK's default, decoded by it
    assert [d["index"] for d in batch["data"]] == [0, 1, 2]
    assert all(d["is_array"] and len(d["embedding"]) == 384 for d in one["data"] + batch["data"])
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    expected = np.array([d.embedding for d in floats.data], dtype=np.float32)
    decoded = np.array([d["embedding"] for d in batch["data"]], dtype=np.float32)
    assert np.array_equal(decoded, expected)  # float32 from base64, bit for bit
    alone = np.array(one["data"][0]["embedding"], dtype=np.float32)
    assert alone @ expected[0] > 0.9999  # alone or in a batch: the same vector
    assert batch["usage"]["prompt_tokens"] == floats.usage.prompt_tokens


def test_responses_whole_and_streamed(server: Server) -> None:
    """The Responses API through the JavaScript SDK (tests/js/responses.mjs): a text answer with
    instructions, then a named function call streamed through the SDK's helper."""
    text = run_js(
        server,
        "create",
        {"model": MODEL, "instructions": "Be brief.", "input": "Say hi.", "max_output_tokens": 12},
        script="responses.mjs",
    )
    assert text["id"].startswith("resp_") and text["status"] in ("completed", "incomplete")
    assert text["output_text"] and text["output"][0]["type"] == "message"
    assert text["usage"]["total_tokens"] == (
        text["usage"]["input_tokens"] + text["usage"]["output_tokens"]
    )
    tool = {key: TOOLS[0]["function"][key] for key in ("name", "description", "parameters")}
    ask = {
        "model": MODEL,
        "input": WEATHER_ASK[0]["content"],
        "tools": [{"type": "function", **tool}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "max_output_tokens": 120,
        "temperature": 0,
    }
    streamed = run_js(server, "stream", ask, script="responses.mjs")
    assert streamed["status"] == "completed"
    assert streamed["numbers"] == list(range(len(streamed["numbers"])))
    assert streamed["events"]["response.function_call_arguments.delta"] > 1
    call = streamed["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert streamed["deltas"]["arguments"] == call["arguments"]
    jsonschema.validate(json.loads(call["arguments"]), TOOLS[0]["function"]["parameters"])
