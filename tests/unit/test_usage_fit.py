"""billing/records.py: a usage row's free text is cut to fit its columns (`storable`), or left
out (`stripped`) — what lets a settlement charge whatever a client or an upstream wrote."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import String

from tokendock.billing.records import (
    INT32_MAX,
    TEXT_WIDTHS,
    UNKNOWN,
    UsageRow,
    storable,
    stripped,
)
from tokendock.storage.tables import usage_records


def row(**fields: object) -> UsageRow:
    base: dict[str, object] = {
        "request_id": "req_1",
        "model": "gemma-3-270m",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "status": "ok",
        "finish_reason": "stop",
        "latency_ms": 12,
        "ttft_ms": 3,
        "user": "alice",
        "deployment": "gpu-1",
        "endpoint": "chat.completions",
    }
    return UsageRow(**{**base, **fields})  # type: ignore[arg-type]


def test_the_widths_are_the_tables() -> None:
    for name, width in TEXT_WIDTHS.items():
        column_type = usage_records.c[name].type
        assert isinstance(column_type, String) and column_type.length == width, name


def test_a_row_the_server_writes_passes_unchanged_and_uncopied() -> None:
    usage = row(user="ünïcode 😀")
    fitted, changed = storable(usage)
    assert fitted is usage and changed == []


def test_nul_surrogates_and_length_are_fixed_field_by_field() -> None:
    usage = row(user="a\x00b\ud800c", finish_reason="x" * 40, deployment=None)
    fitted, changed = storable(usage)
    assert sorted(changed) == ["finish_reason", "user"]
    assert fitted.user == "ab?c"
    assert fitted.finish_reason == "x" * TEXT_WIDTHS["finish_reason"]
    assert fitted.deployment is None
    for name in TEXT_WIDTHS:
        text = getattr(fitted, name)
        if text is not None:
            text.encode("utf-8")  # storable: no lone surrogate left


def test_stripped_keeps_the_counts_and_drops_the_free_text() -> None:
    usage = row(model="m\x00", prompt_tokens=2**40, cached_tokens=-1)
    bare = stripped(usage)
    assert (bare.user, bare.finish_reason, bare.deployment, bare.endpoint) == (None,) * 4
    assert bare.model == UNKNOWN and bare.status == "ok"
    assert (bare.prompt_tokens, bare.cached_tokens) == (INT32_MAX, 0)
    kept = {k: v for k, v in asdict(bare).items() if k in ("request_id", "completion_tokens")}
    assert kept == {"request_id": "req_1", "completion_tokens": 5}
