"""The ledger's load signal: quiet while few requests are in flight, read from the gauge it was
handed (the app hands it the middleware's count in observability.Metrics)."""

from __future__ import annotations

from tokendock.billing.load import FewInFlight, InFlight, Load
from tokendock.observability import Metrics


def test_quiet_up_to_the_limit_of_requests_in_flight() -> None:
    gauge = InFlight()
    load: Load = FewInFlight(gauge, 4)
    seen = []
    for active in range(7):
        gauge.active = active
        seen.append(load.quiet())
    assert seen == [True] * 5 + [False] * 2


def test_the_metrics_count_is_a_gauge() -> None:
    metrics = Metrics()
    load = FewInFlight(metrics, 1)
    assert load.quiet()
    metrics.active += 2
    assert not load.quiet()
