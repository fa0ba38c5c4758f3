"""Log-linear histogram bucket math (the Python twin of bpf/record.bpf.c's cr_bucket) and ring record decoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosinject.record.histogram import (BUCKETS, REL_ERROR, SUB, Histogram, bucket_bounds, bucket_of, bucket_value,
                                       exact_quantile)


def reference_bucket(v: int) -> int:
    """cr_bucket written out with integers, as in the C."""
    if v < 2 * SUB:
        return v
    msb = v.bit_length() - 1
    if msb > 39:
        return BUCKETS - 1
    e = msb - 7
    return e * SUB + (v >> e)


@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=200))
@settings(max_examples=200, deadline=None)
def test_bucket_of_matches_the_c_formula_and_contains_the_value(values):
    got = bucket_of(np.array(values, dtype=np.uint64))
    assert list(got) == [reference_bucket(v) for v in values]
    low, high = bucket_bounds(got)
    for v, lo, hi, b in zip(values, low, high, got):
        if b < BUCKETS - 1:
            assert lo <= v < hi


def test_buckets_are_contiguous_and_at_most_one_128th_wide():
    index = np.arange(BUCKETS)
    low, high = bucket_bounds(index)
    assert low[0] == 0 and np.all(low[1:] == high[:-1])
    assert np.all((high - low)[256:] / low[256:] <= 1 / SUB)
    assert np.all(high[:256] - low[:256] == 1)
    assert bucket_of([2**40 - 1])[0] == BUCKETS - 1 and high[-1] == 2**40
    # powers of two sit at the start of their bucket (float log2 must not misplace them)
    for k in range(8, 40):
        assert bucket_bounds(bucket_of([2**k]))[0][0] == 2**k
        assert bucket_bounds(bucket_of([2**k - 1]))[1][0] == 2**k


@pytest.mark.parametrize("family", ["lognormal", "bimodal", "small"])
def test_histogram_quantiles_are_within_the_stated_relative_error_of_exact_ones(family):
    rng = np.random.default_rng(7)
    if family == "lognormal":
        values = rng.lognormal(np.log(2e6), 0.8, 200_000).astype(np.int64)
    elif family == "bimodal":
        values = np.concatenate([rng.normal(6_500, 800, 100_000), rng.normal(20e6, 2e5, 50_000)]).astype(np.int64)
    else:
        values = rng.integers(0, 600, 50_000)
    values = np.maximum(values, 0)
    h = Histogram.from_values(values)
    assert h.total == len(values)
    qs = np.array([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0])
    est = h.quantile(qs)
    exact = exact_quantile(values, qs)
    assert np.all(np.abs(est - exact) <= REL_ERROR * exact + 1e-9), (est, exact)


def test_empty_histogram_and_bad_quantiles():
    h = Histogram(np.zeros(BUCKETS, np.uint64))
    assert np.isnan(h.quantile(0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        h.quantile(1.5)
    assert bucket_value([5])[0] == 5


def test_ring_records_decode_up_to_the_first_busy_one_and_skip_discarded():
    from chaosinject.kernel.ring import RB_BUSY, RB_DISCARD, RECORD_DTYPE, decode_records

    recs = np.zeros(5, RECORD_DTYPE)
    recs["len"] = 24
    recs["t_ns"] = [10, 20, 30, 40, 50]
    recs["latency_ns"] = [1, 2, 3, 4, 5]
    recs["len"][1] |= RB_DISCARD
    recs["len"][3] |= RB_BUSY
    events, used = decode_records(recs)
    assert used == 3
    assert list(events["t_ns"]) == [10, 30] and list(events["latency_ns"]) == [1, 3]
    recs["len"][0] = 16
    with pytest.raises(RuntimeError, match="16 bytes"):
        decode_records(recs)


def test_histograms_written_by_a_recorder_read_back(tmp_path):
    """The histograms/ part format round-trips into Histogram objects per flow and phase."""
    import pandas as pd

    from chaosinject.record.histogram import histogram_of, read_histograms

    assert read_histograms(tmp_path).empty
    rng = np.random.default_rng(3)
    values = {"baseline": rng.integers(2_000, 9_000, 5_000), "fault": rng.integers(20_000_000, 21_000_000, 5_000)}
    rows = []
    for phase, v in values.items():
        counts = Histogram.from_values(v).counts
        (idx,) = np.nonzero(counts)
        low, high = bucket_bounds(idx)
        rows.append(pd.DataFrame({"source": "oneway", "flow": "a->b", "rule_id": 0, "phase": phase, "bucket": idx,
                                  "low_ns": low, "high_ns": high, "count": counts[idx].astype(np.int64)}))
    (tmp_path / "histograms").mkdir()
    pd.concat(rows).to_parquet(tmp_path / "histograms" / "oneway-000001.parquet", index=False)
    frame = read_histograms(tmp_path)
    for phase, v in values.items():
        h = histogram_of(frame, flow="a->b", phase=phase)
        assert h.total == 5_000
        exact = exact_quantile(v, 0.5)
        assert abs(h.quantile(0.5) - exact) <= REL_ERROR * exact
