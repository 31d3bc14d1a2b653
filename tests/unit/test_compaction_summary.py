"""A compaction's summary is bounded: at most SUMMARY_TOKENS (what its hold covers), fewer when
the client asks (`max_output_tokens`), and an upstream gets the same bound in its body."""

from __future__ import annotations

from tokendock.services.compaction import SUMMARY_TOKENS, summary_request


def test_a_summary_is_bounded_by_default_and_by_the_client() -> None:
    default = summary_request("m", "older turns")
    assert default.max_tokens == SUMMARY_TOKENS == 512
    assert default.payload.json()["max_tokens"] == SUMMARY_TOKENS
    assert summary_request("m", "t", 5).max_tokens == 5
    assert summary_request("m", "t", 10_000).max_tokens == SUMMARY_TOKENS
    assert summary_request("m", "t", 5).payload.json()["max_tokens"] == 5
