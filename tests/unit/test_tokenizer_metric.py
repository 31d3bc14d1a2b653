from __future__ import annotations

from tokendock.observability import Metrics


def test_tokenizer_calls_are_a_prometheus_counter_per_model() -> None:
    metrics = Metrics()
    metrics.tokenized("gemma-3-270m")
    metrics.tokenized("gemma-3-270m")
    body, _ = metrics.render()
    assert b'tokendock_tokenizer_calls_total{model="gemma-3-270m"} 2.0' in body
