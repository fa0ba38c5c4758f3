"""Where the halt guard's monitors get their dependence prior (see :mod:`chaosinject.analysis.sequential`,
"Dependent streams"): :func:`baseline_inflation`, the variance inflation a baseline's events show in time order
(the phase-length estimate of :mod:`chaosinject.analysis.dependence` and the largest over time scales), and
:class:`RunningDependence`, the running batch-means estimate of a stream's own inflation (off by default)."""
from __future__ import annotations

import numpy as np
from scipy import special

from ._types import InvalidInput

__all__ = ["RunningDependence", "baseline_inflation"]


class RunningDependence:
    """Sequential batch means of a 0/1 event stream: the running variance inflation of its event count.

    Blocks hold at least ``block`` samples (``add_events`` puts each array exactly into blocks; ``add_counts``
    with counts only puts a whole batch into the current block); when ``max_blocks`` are full, neighbours are
    merged and the block length doubled. :meth:`inflation` uses the mean squared successive difference of the
    block rates, each difference scaled by its variance under independence ``p (1 - p) (1/n_j + 1/n_j+1)``
    (a drift adds little; a step change adds one term, which can still be large).
    """

    MIN_BLOCKS = 8

    def __init__(self, block: int = 32, max_blocks: int = 64, alpha: float = 0.05):
        if block < 1 or max_blocks < 2 * self.MIN_BLOCKS:
            raise InvalidInput(f"need block >= 1 and max_blocks >= {2 * self.MIN_BLOCKS}")
        self.m = int(block)
        self.max_blocks = int(max_blocks)
        self.alpha = float(alpha)
        self._x: list[int] = []
        self._n: list[int] = []
        self._cx = 0
        self._cn = 0
        self._version = 0          # bumped when a block closes: the estimate changes only then
        self._cached: tuple[int, float] = (-1, 1.0)

    def _merge(self) -> None:
        if len(self._x) >= self.max_blocks:
            self._x = [a + b for a, b in zip(self._x[0::2], self._x[1::2])] + self._x[len(self._x) // 2 * 2:]
            self._n = [a + b for a, b in zip(self._n[0::2], self._n[1::2])] + self._n[len(self._n) // 2 * 2:]
            self.m *= 2

    def _close(self) -> None:
        self._version += 1
        self._x.append(self._cx)
        self._n.append(self._cn)
        self._cx = self._cn = 0
        self._merge()

    def add_counts(self, events: int, trials: int) -> None:
        self._cx += int(events)
        self._cn += int(trials)
        if self._cn >= self.m:
            self._close()

    def add_events(self, ind: np.ndarray) -> None:
        ind = np.asarray(ind, dtype=bool).ravel()
        L, i = ind.size, 0
        if self._cn and L:
            take = min(L, self.m - self._cn)
            self.add_counts(int(np.count_nonzero(ind[:take])), take)
            i = take
        while L - i >= self.m:
            k = min((L - i) // self.m, self.max_blocks - len(self._x))
            c = np.add.reduceat(ind[i:i + k * self.m].astype(np.int32), np.arange(0, k * self.m, self.m))
            self._version += 1
            self._x.extend(int(v) for v in c)
            self._n.extend([self.m] * k)
            i += k * self.m
            self._merge()
        if L - i:
            self._cx += int(np.count_nonzero(ind[i:]))
            self._cn += L - i

    @property
    def blocks(self) -> int:
        return len(self._x)

    def estimate(self) -> tuple[float, float, float]:
        """(VIF estimate, p-value of the dispersion test, degrees of freedom); (1, 1, 0) with fewer than 8 blocks
        or no variation."""
        B = len(self._x)
        if B < self.MIN_BLOCKS:
            return 1.0, 1.0, 0.0
        x = np.asarray(self._x, dtype=np.float64)
        n = np.asarray(self._n, dtype=np.float64)
        p = float(x.sum() / n.sum())
        if p <= 0.0 or p >= 1.0:
            return 1.0, 1.0, 0.0
        r = x / n
        d2 = np.diff(r) ** 2 / (p * (1 - p) * (1 / n[1:] + 1 / n[:-1]))
        vif = float(d2.mean())
        df = 2.0 * (B - 1) ** 2 / (3.0 * B - 4.0)   # von Neumann: Var(MSSD) ~ (3B - 4) / (B - 1)^2 relative
        return vif, float(special.chdtrc(df, df * vif)), df

    def inflation(self) -> float:
        """The inflation to temper with: ``VIF_hat (t_df / z)^2`` when the dispersion test rejects, else 1."""
        if self._cached[0] == self._version:
            return self._cached[1]
        vif, pv, df = self.estimate()
        out = 1.0
        if df > 0.0 and pv < self.alpha and vif > 1.0:
            out = vif * (float(special.stdtrit(df, 0.975)) / float(special.ndtri(0.975))) ** 2
        self._cached = (self._version, out)
        return out


def baseline_inflation(ind: object, what: str, d: object = None) -> tuple[float, str]:
    """The prior inflation a monitor takes from a baseline's events in time order, and its text: the larger of
    the phase-length batch-means inflation (:func:`chaosinject.analysis.indicator_dependence`, ``d`` when
    already computed) and the largest over time scales (:func:`chaosinject.analysis.burst_inflation`)."""
    from .dependence import burst_inflation, indicator_dependence

    if d is None:
        d = indicator_dependence(ind, what)
    if d.batches == 0:
        return 1.0, f"{d.what}: n={d.n}, too few to estimate"
    b = burst_inflation(ind)
    text = (f"{d.what}: n={d.n}, {d.events} events, " + ("DEPENDENT, " if d.applied else "") +
            f"inflation estimate {d.vif_estimate:.3g}, p={d.pvalue:.2g}; {b.text()}")
    return max(d.vif, b.inflation), text
