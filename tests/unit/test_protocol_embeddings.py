"""POST /v1/embeddings' schema and body: the input forms, the bounds (400 naming `input`), and
base64 as the little-endian float32 bytes of the same values the float format writes."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from tokendock.errors import InvalidRequest, UpstreamError
from tokendock.inference.upstream.embeddings import upstream_vectors
from tokendock.protocol.embeddings import EmbeddingRequest, embedding_body


def parse(**body: object) -> EmbeddingRequest:
    req = EmbeddingRequest.model_validate_json(orjson.dumps({"model": "m", **body}), strict=True)
    req.check()
    return req


def test_the_four_input_forms() -> None:
    assert parse(input="hi").inputs() == ["hi"]
    assert parse(input=["a", "b"]).inputs() == ["a", "b"]
    assert parse(input=[101, 7592, 102]).inputs() == [[101, 7592, 102]]
    assert parse(input=[[1, 2], [3]]).inputs() == [[1, 2], [3]]
    assert parse(input=["héllo", "ab"]).input_bounds() == [6 + 2, 2 + 2]


@pytest.mark.parametrize("given", ["", [], [""], [[]], [[1], []], ["x"] * 2049], ids=repr)
def test_empty_or_too_many_inputs_are_400s_naming_input(given: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(input=given)
    assert caught.value.param == "input"


def test_base64_is_the_float32_bytes_of_the_float_values() -> None:
    vectors = [np.array([0.1, -0.5, 3e-8], dtype=np.float32), np.array([1, 0, 0], dtype=np.float32)]
    floats = orjson.loads(orjson.dumps(embedding_body("m", vectors, 7, "float")))
    b64 = orjson.loads(orjson.dumps(embedding_body("m", vectors, 7, "base64")))
    assert floats["object"] == "list" and floats["model"] == "m"
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    for f, b, v in zip(floats["data"], b64["data"], vectors, strict=True):
        assert f["object"] == "embedding" and f["index"] == b["index"]
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, v)
        assert np.array_equal(np.array(f["embedding"], dtype=np.float32), v)


def test_an_upstream_reply_in_either_format_and_order() -> None:
    vector = np.array([0.25, -1.0], dtype=np.float32)
    encoded = base64.b64encode(vector.tobytes()).decode()
    body = {"data": [{"index": 1, "embedding": encoded}, {"index": 0, "embedding": [0.5, 0.5]}]}
    events = upstream_vectors(body, 2)
    assert [e.index for e in events] == [0, 1]
    assert np.array_equal(events[1].vector, vector)
    with pytest.raises(UpstreamError):
        upstream_vectors({"data": [{"embedding": "not base64!"}]}, 1)
    with pytest.raises(UpstreamError):
        upstream_vectors({"data": []}, 1)
