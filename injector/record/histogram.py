"""Log-linear latency histograms: the bucket math shared with bpf/record.bpf.c (pure numpy).

Values below 256 ns each have their own bucket; above, every power of two is split into 128 equal
sub-buckets, so a bucket is at most 1/128 of its lower bound wide. A quantile read from the histogram is
the middle of the bucket holding that rank: within ``REL_ERROR`` (1/256, 0.39 %) of the exact quantile of
the raw values (the same order statistic), and exact below 256 ns. Values >= 2^40 ns (~18 min) share the
last bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernel.abi import HIST_BUCKETS as BUCKETS
from ..kernel.abi import HIST_MAX_MSB as MAX_MSB
from ..kernel.abi import HIST_SUB_BITS as SUB_BITS

SUB = 1 << SUB_BITS
REL_ERROR = 1 / (2 * SUB)


def bucket_of(values) -> np.ndarray:
    """Bucket index of each value (ns, >= 0), as the BPF program computes it."""
    v = np.asarray(values, dtype=np.uint64)
    out = v.astype(np.int64)
    big = v >= 2 * SUB
    if big.any():
        vb = v[big]
        msb = np.floor(np.log2(vb.astype(np.float64))).astype(np.int64)
        # float log2 can be one off right at a power of two: fix with exact integer checks
        msb -= (np.left_shift(np.uint64(1), msb.astype(np.uint64)) > vb).astype(np.int64)
        msb += (np.left_shift(np.uint64(1), (msb + 1).astype(np.uint64)) <= vb).astype(np.int64)
        e = msb - SUB_BITS
        idx = e * SUB + np.right_shift(vb, e.astype(np.uint64)).astype(np.int64)
        idx[msb > MAX_MSB] = BUCKETS - 1
        out[big] = idx
    return out


def bucket_bounds(index) -> tuple[np.ndarray, np.ndarray]:
    """[low, high) in ns of each bucket index."""
    i = np.asarray(index, dtype=np.int64)
    e = np.maximum(i // SUB - 1, 0)
    m = i - e * SUB
    low = m << e
    return low, low + (np.int64(1) << e)


def bucket_value(index) -> np.ndarray:
    """The value reported for a bucket: its middle integer (exact for 1-ns buckets)."""
    low, high = bucket_bounds(index)
    return low + (high - low - 1) // 2


@dataclass(frozen=True)
class Histogram:
    """Counts per bucket (length ``BUCKETS``)."""

    counts: np.ndarray

    @classmethod
    def from_values(cls, values) -> "Histogram":
        return cls(np.bincount(bucket_of(values), minlength=BUCKETS).astype(np.uint64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q) -> np.ndarray | float:
        """The value at rank ceil(q * n) (the inverted-CDF quantile); NaN if empty."""
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if np.any((qs < 0) | (qs > 1)):
            raise ValueError("quantiles must lie in [0, 1]")
        n = self.total
        if n == 0:
            out = np.full(qs.shape, np.nan)
        else:
            rank = np.maximum(np.ceil(qs * n).astype(np.int64), 1)
            cum = np.cumsum(self.counts.astype(np.int64))
            out = bucket_value(np.searchsorted(cum, rank, side="left")).astype(np.float64)
        return float(out[0]) if np.ndim(q) == 0 else out

    def __add__(self, other: "Histogram") -> "Histogram":
        return Histogram(self.counts + other.counts)


def exact_quantile(values, q) -> np.ndarray | float:
    """The same order statistic from raw values (what Histogram.quantile approximates)."""
    return np.quantile(np.asarray(values), q, method="inverted_cdf")


def read_histograms(run_dir):
    """All ``histograms/*.parquet`` parts of a run directory as one DataFrame (docs/run-directory.md);
    empty (with the columns) when the run has none."""
    from pathlib import Path

    import pandas as pd

    parts = sorted((Path(run_dir) / "histograms").glob("*.parquet"))
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in (
            ("source", "object"), ("flow", "string"), ("rule_id", "int32"), ("phase", "object"),
            ("bucket", "int32"), ("low_ns", "int64"), ("high_ns", "int64"), ("count", "int64"))})
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def histogram_of(frame, **where) -> Histogram:
    """One Histogram from ``read_histograms`` rows selected by column values (e.g. ``flow=``, ``phase=``,
    ``source=``); rows of several recorders or rules add up."""
    rows = frame
    for column, value in where.items():
        rows = rows[rows[column] == value]
    counts = np.zeros(BUCKETS, np.uint64)
    np.add.at(counts, rows["bucket"].to_numpy(np.int64), rows["count"].to_numpy(np.uint64))
    return Histogram(counts)
