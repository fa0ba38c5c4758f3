"""Two-sample latency comparisons, one module per algorithm (this module gathers their names for older imports):

- :mod:`.mann_whitney`: Mann-Whitney U with the Hodges-Lehmann shift and its Moses interval (Kayenta style):
  :func:`compare_latency`, :func:`hodges_lehmann`;
- :mod:`.quantile_shift`: the p99 difference and ratio intervals and a two-sample quantile exceedance test:
  :func:`quantile_difference_ci`, :func:`quantile_shift_test`;
- :mod:`.tail_rank`: an upper-tail linear rank test: :func:`tail_rank_test`.
"""
from __future__ import annotations

from . import mann_whitney, quantile_shift, tail_rank
from .mann_whitney import *  # noqa: F401,F403
from .quantile_shift import *  # noqa: F401,F403
from .tail_rank import *  # noqa: F401,F403

__all__ = [*mann_whitney.__all__, *quantile_shift.__all__, *tail_rank.__all__]
