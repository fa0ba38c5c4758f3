"""chaos-inject analysis: steady-state statistics (numpy/scipy only; importable without root, bcc or pyroute2).

Plots live in :mod:`analysis.plots` (the only matplotlib user); it is not imported here.
"""
from __future__ import annotations

from ._types import AnalysisError, ConfidenceInterval, InvalidInput, Outcome
from .compare import (
    HodgesLehmann,
    LatencyComparison,
    QuantileDifference,
    QuantileShiftTest,
    TailRankTest,
    compare_latency,
    hodges_lehmann,
    quantile_difference_ci,
    quantile_shift_test,
    tail_rank_test,
)
from .proportions import ProportionComparison, compare_proportions, proportion_ci, required_trials_two_proportions
from .quantiles import (
    DEFAULT_QUANTILES,
    QuantileEstimate,
    min_samples_for_quantile,
    order_statistic_ranks,
    quantile_ci,
    quantile_cis,
    quantile_table,
)
from .rundir import SAMPLE_COLUMNS, SCHEMA_VERSION, SOURCES, InvalidRun, Run, example_run, load_run
from .sequential import (
    DEFAULT_RATIOS,
    ErrorRateMonitor,
    QuantileExceedanceMonitor,
    SequentialProportionTest,
    mixture_log_evidence,
    proportion_confidence_sequence,
)
from .verdict import EXPECTATIONS, PHASES, Check, PhaseData, SteadyStateSpec, Verdict, evaluate, phases_from_run

__all__ = [
    # types and errors
    "AnalysisError",
    "ConfidenceInterval",
    "InvalidInput",
    "Outcome",
    # proportions
    "ProportionComparison",
    "compare_proportions",
    "proportion_ci",
    "required_trials_two_proportions",
    # quantiles
    "DEFAULT_QUANTILES",
    "QuantileEstimate",
    "min_samples_for_quantile",
    "order_statistic_ranks",
    "quantile_ci",
    "quantile_cis",
    "quantile_table",
    # comparisons
    "HodgesLehmann",
    "LatencyComparison",
    "QuantileDifference",
    "QuantileShiftTest",
    "TailRankTest",
    "compare_latency",
    "hodges_lehmann",
    "quantile_difference_ci",
    "quantile_shift_test",
    "tail_rank_test",
    # sequential
    "DEFAULT_RATIOS",
    "ErrorRateMonitor",
    "QuantileExceedanceMonitor",
    "SequentialProportionTest",
    "mixture_log_evidence",
    "proportion_confidence_sequence",
    # run directory
    "InvalidRun",
    "Run",
    "SAMPLE_COLUMNS",
    "SCHEMA_VERSION",
    "SOURCES",
    "example_run",
    "load_run",
    # verdicts
    "PHASES",
    "EXPECTATIONS",
    "Check",
    "PhaseData",
    "SteadyStateSpec",
    "Verdict",
    "evaluate",
    "phases_from_run",
]
