"""How `dialer bench`'s watched scenarios read the engine's histograms off `/metrics`."""

from __future__ import annotations

from dialer.watched import _over, _p99_bound_ms, percentile_ms

# Cumulative counts by bucket bound, as Prometheus exposes a histogram: 1,000 observations,
# 985 within 5 ms, 995 within 10 ms, 998 within 50 ms, 2 over 100 ms (one over 1 s).
BUCKETS = [
    (0.001, 500.0),
    (0.005, 985.0),
    (0.01, 995.0),
    (0.05, 998.0),
    (0.1, 998.0),
    (1.0, 999.0),
    (float("inf"), 1000.0),
]


def test_p99_is_the_bound_of_the_bucket_holding_it() -> None:
    assert _p99_bound_ms(BUCKETS) == 10.0
    assert _p99_bound_ms([(0.005, 0.0), (float("inf"), 0.0)]) is None
    assert _p99_bound_ms([]) is None


def test_observations_over_a_bound_are_counted_from_the_cumulative_buckets() -> None:
    assert _over(BUCKETS, 0.05) == 2
    assert _over(BUCKETS, 0.1) == 2
    assert _over(BUCKETS, 1.0) == 1
    assert _over(BUCKETS, 0.005) == 15
    assert _over([], 0.05) == 0


def test_percentiles_are_nearest_rank_in_ms_of_unsorted_seconds() -> None:
    """The latency percentiles every bench scenario prints (watched, api, disk)."""
    seconds = [i / 1000 for i in range(1000, 0, -1)]  # 1..1000 ms, in reverse
    assert percentile_ms(seconds, 0.5) == 501.0
    assert percentile_ms(seconds, 0.99) == 991.0
    assert percentile_ms(seconds, 0.999) == 1000.0
    assert percentile_ms([0.0042], 0.99) == 4.2
