"""The usage page's filters and chart: every query string gives a bounded view."""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlencode

from starlette.requests import Request

from tokendock.storage.history import UsageLine
from tokendock.web.dashboard.usage import MAX_DAYS, Filters, chart


def filters(**params: str) -> Filters:
    scope = {"type": "http", "query_string": urlencode(params).encode(), "headers": []}
    return Filters.of(Request(scope))


def test_any_dates_give_at_most_a_year_and_a_message_never_an_exception() -> None:
    for params in (
        {"from": "1026-01-01", "to": "2025-12-31"},
        {"to": "9999-12-31"},
        {"to": "0001-01-05"},
        {"from": "0001-01-01", "to": "9999-12-31"},
        {"from": "2025-02-30"},
        {"key": "1" * 5000},
    ):
        f = filters(**params)
        assert f.problem, params
        assert 0 <= (f.end - f.start).days < MAX_DAYS
    clamped = filters(**{"from": "2020-01-01", "to": "2025-06-30"})
    assert "366 days" in (clamped.problem or "")
    assert (clamped.start, clamped.end) == (date(2024, 6, 30), date(2025, 6, 30))
    fine = filters(**{"from": "2025-03-31", "to": "2025-03-01"})  # swapped, not refused
    assert (fine.start, fine.end, fine.problem) == (date(2025, 3, 1), date(2025, 3, 31), None)


def test_long_ranges_are_charted_per_week() -> None:
    start, end = date(2025, 1, 1), date(2025, 12, 31)
    line = UsageLine(date(2025, 1, 9), "m", 1, 1, 1, 700)
    bars = chart([line], start, end)
    assert len(bars) == 53 and bars[1].height == 160 and bars[0].height == 0
    assert bars[1].label.startswith("week of 2025-01-08")
    assert len(chart([], start, start + timedelta(days=91))) == 92
