"""Plots of runs and analysis results. The only module of :mod:`analysis` that imports matplotlib (Agg).

Every function takes data or results and returns a :class:`matplotlib.figure.Figure`; nothing is shown or
saved here. Latencies are in nanoseconds and drawn in milliseconds.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .quantiles import QuantileEstimate, quantile_cis  # noqa: E402
from .phases import PHASES, phases_from_run  # noqa: E402
from .verdict import Verdict  # noqa: E402

__all__ = ["dependence_figure", "latency_cdf", "latency_over_time", "quantile_comparison", "verdict_figure"]

_COLORS = {"baseline": "tab:blue", "fault": "tab:red", "recovery": "tab:green"}


def _phase_arrays(data: Any, source: str | None) -> dict[str, np.ndarray]:
    if hasattr(data, "samples"):
        return {k: np.asarray(v.latencies, dtype=float) for k, v in phases_from_run(data, source=source).items()}
    return {k: np.asarray(getattr(v, "latencies", v), dtype=float) for k, v in data.items()}


def latency_cdf(data: Any, *, source: str | None = None, verdict: Verdict | None = None,
                log_x: bool = True, tail: bool = True) -> Figure:
    """Empirical CDF per phase (left) and, if ``tail``, the tail as 1 - F on a log scale (right).

    ``data``: a loaded run or a mapping phase -> latencies (ns). With a ``verdict``, its quantile estimates
    and intervals are marked.
    """
    arrays = _phase_arrays(data, source)
    fig = Figure(figsize=(11 if tail else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if tail else 1, squeeze=False)[0]
    for name, a in arrays.items():
        if a.size == 0:
            continue
        s = np.sort(a) / 1e6
        f = np.arange(1, s.size + 1) / s.size
        c = _COLORS.get(name)
        axes[0].step(s, f, where="post", label=f"{name} (n={s.size})", color=c)
        if tail:
            axes[1].step(s, 1 - f + 1 / s.size, where="post", color=c, label=name)
    if verdict is not None:
        for name, qs in verdict.quantiles.items():
            for q, est in qs.items():
                if est.interval is not None and q >= 0.99:
                    for ax in axes:
                        ax.axvspan(est.interval.low / 1e6, est.interval.high / 1e6, color=_COLORS.get(name),
                                   alpha=0.15)
    axes[0].set_xlabel("latency (ms)")
    axes[0].set_ylabel("F(x)")
    axes[0].set_title("latency CDF per phase")
    axes[0].legend(loc="lower right")
    if tail:
        axes[1].set_yscale("log")
        axes[1].set_xlabel("latency (ms)")
        axes[1].set_ylabel("1 - F(x)")
        axes[1].set_title("tail (p99 at 1e-2, p99.9 at 1e-3)")
        for p in (1e-2, 1e-3):
            axes[1].axhline(p, color="grey", lw=0.6, ls=":")
    for ax in axes:
        if log_x:
            ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    return fig


def latency_over_time(run: Any, *, source: str | None = None, bin_s: float = 1.0,
                      quantiles: Sequence[float] = (0.5, 0.99)) -> Figure:
    """Latency quantiles and error rate per time bin, with the fault window shaded (from ``run.meta``)."""
    df = run.samples
    present = set(df["source"].astype(str).unique())
    src = source or next((s for s in ("request", "rtt", "oneway") if s in present), "request")
    t0 = int(df["t_ns"].min()) if len(df) else 0
    phases = run.meta.get("phases", {})
    if phases:
        t0 = min(int(w["start_ns"]) for w in phases.values())
    bin_ns = int(bin_s * 1e9)
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax_l, ax_e = fig.subplots(2, 1, sharex=True)
    lat = df[df["source"].astype(str) == src]
    if len(lat):
        b = (lat["t_ns"].to_numpy() - t0) // bin_ns
        v = lat["latency_ns"].to_numpy() / 1e6
        order = np.argsort(b, kind="stable")
        b, v = b[order], v[order]
        edges = np.flatnonzero(np.diff(b)) + 1
        groups = np.split(v, edges)
        centers = (b[np.concatenate(([0], edges))] + 0.5) * bin_s
        for q in quantiles:
            ax_l.plot(centers, [np.quantile(g, q) for g in groups], label=f"p{q * 100:g}")
    ax_l.set_ylabel(f"{src} latency (ms)")
    ax_l.set_yscale("log")
    ax_l.legend(loc="upper left")
    req = df[df["source"].astype(str) == "request"]
    if len(req):
        b = (req["t_ns"].to_numpy() - t0) // bin_ns
        err = ~req["ok"].to_numpy()
        nb = int(b.max()) + 1
        tot = np.bincount(b, minlength=nb)
        bad = np.bincount(b, weights=err, minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(tot > 0, bad / tot, np.nan)
        ax_e.step((np.arange(nb) + 0.5) * bin_s, rate * 100, where="mid", color="tab:red")
    ax_e.set_ylabel("error rate (%)")
    ax_e.set_xlabel("time since start (s)")
    for ax in (ax_l, ax_e):
        for name, w in phases.items():
            if name == "fault":
                ax.axvspan((int(w["start_ns"]) - t0) / 1e9, (int(w["end_ns"]) - t0) / 1e9, color="tab:red",
                           alpha=0.12, label=None)
        ax.grid(True, alpha=0.3)
    ax_l.set_title(f"{run.meta.get('flow', '')} — fault window shaded")
    return fig


def quantile_comparison(baseline: Any, other: Any, *, label: str = "fault",
                        qs: Sequence[float] | None = None, confidence: float = 0.95) -> Figure:
    """QQ plot of ``other`` against ``baseline`` (left) and percentiles with their intervals (right)."""
    x = np.asarray(getattr(baseline, "latencies", baseline), dtype=float)
    y = np.asarray(getattr(other, "latencies", other), dtype=float)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_qq, ax_p = fig.subplots(1, 2)
    grid = np.linspace(0.005, 0.999, 300)
    qx, qy = np.quantile(x, grid) / 1e6, np.quantile(y, grid) / 1e6
    ax_qq.plot(qx, qy, ".", ms=3, color=_COLORS.get(label, "tab:red"))
    lim = [min(qx.min(), qy.min()), max(qx.max(), qy.max())]
    ax_qq.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax_qq.set_xlabel("baseline quantile (ms)")
    ax_qq.set_ylabel(f"{label} quantile (ms)")
    ax_qq.set_xscale("log")
    ax_qq.set_yscale("log")
    ax_qq.legend()
    ax_qq.set_title("QQ plot")
    qs = tuple(qs) if qs is not None else (0.5, 0.9, 0.99, 0.999)
    for i, (name, arr) in enumerate((("baseline", x), (label, y))):
        ests: Mapping[float, QuantileEstimate] = quantile_cis(arr, qs, confidence)
        pos = np.arange(len(qs)) + (i - 0.5) * 0.25
        for p, q in zip(pos, qs):
            e = ests[q]
            ax_p.plot([p], [e.estimate / 1e6], "o", color=_COLORS.get(name, "tab:red"),
                      label=name if q == qs[0] else None)
            if e.interval is not None:
                ax_p.vlines(p, e.interval.low / 1e6, e.interval.high / 1e6, color=_COLORS.get(name, "tab:red"))
            else:
                ax_p.annotate("too few", (p, e.estimate / 1e6), fontsize=7)
    ax_p.set_xticks(np.arange(len(qs)), [f"p{q * 100:g}" for q in qs])
    ax_p.set_yscale("log")
    ax_p.set_ylabel("latency (ms)")
    ax_p.set_title(f"percentiles with {confidence:.0%} order-statistic intervals")
    ax_p.legend()
    for ax in (ax_qq, ax_p):
        ax.grid(True, which="both", alpha=0.3)
    return fig


def verdict_figure(verdict: Verdict) -> Figure:
    """A grid of check outcomes (phase x check), coloured held / violated / inconclusive."""
    colors = {"held": "#2ca02c", "violated": "#d62728", "inconclusive": "#bbbbbb", "deviated": "#1f77b4",
              "no change": "#ff7f0e"}
    rows = [p for p in PHASES if verdict.phase(p)]
    cols = sorted({(c.metric, c.kind) for c in verdict.checks})
    fig = Figure(figsize=(2 + 2.2 * len(cols), 0.6 + 0.6 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    for i, p in enumerate(rows):
        for j, key in enumerate(cols):
            match = [c for c in verdict.phase(p) if (c.metric, c.kind) == key]
            if match:
                o = match[0].outcome.value
                ax.add_patch(matplotlib.patches.Rectangle((j, i), 1, 1, color=colors[o]))
                ax.text(j + 0.5, i + 0.5, o, ha="center", va="center", fontsize=9)
    ax.set_xlim(0, max(len(cols), 1))
    ax.set_ylim(0, max(len(rows), 1))
    ax.set_xticks(np.arange(len(cols)) + 0.5, [f"{m}\n{k}" for m, k in cols])
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows)
    ax.invert_yaxis()
    ax.set_title(f"steady state: {verdict.outcome.value}")
    return fig


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation at lags 1..max_lag (FFT; 0 for a constant series)."""
    c = x - x.mean()
    var = float(np.dot(c, c))
    if var == 0.0 or x.size < 2:
        return np.zeros(max_lag)
    size = 1 << int(2 * x.size - 1).bit_length()
    f = np.fft.rfft(c, size)
    r = np.fft.irfft(f * np.conj(f), size)[1:max_lag + 1]
    return r / var


def dependence_figure(data: Any, *, source: str | None = None, verdict: Verdict | None = None, q: float = 0.99,
                      max_lag: int = 200) -> Figure:
    """Serial dependence per phase: the autocorrelation of the q-exceedance indicator (a sample above its phase's
    q-quantile, in time order) at lags 1..``max_lag``, with the +-1.96/sqrt(n) band of independent samples.
    Exceedances in episodes show as a slowly decaying curve far outside the band. With a ``verdict``, the legend
    gives each phase's lag-1 autocorrelation, variance inflation and effective n it found (``verdict.dependence``).

    ``data``: a loaded run or a mapping phase -> latencies (ns) in time order."""
    arrays = _phase_arrays(data, source)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    lags = np.arange(1, max_lag + 1)
    for name, a in arrays.items():
        if a.size < 10:
            continue
        ind = (a > np.quantile(a, q)).astype(np.float64)
        r = _acf(ind, min(max_lag, a.size - 1))
        label = f"{name} (n={a.size})"
        d = (verdict.dependence.get(name, {}).get("latency") if verdict is not None else None)
        if d is not None and d.batches:
            label = (f"{name}: lag-1 {d.lag1:.2f}, inflation {d.vif_estimate:.2g}, "
                     f"n_eff {d.n_eff:.0f} of {d.n}" + (" (widened)" if d.applied else ""))
        ax.plot(lags[:r.size], r, color=_COLORS.get(name), label=label, lw=1.2)
        ax.axhline(1.96 / np.sqrt(a.size), color=_COLORS.get(name), ls=":", lw=0.8)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xlabel("lag (samples, in time order)")
    ax.set_ylabel(f"autocorrelation of p{q * 100:g} exceedances")
    ax.set_title("Dependence in time order (dotted: 95 % band of independent samples)")
    ax.legend(fontsize=8)
    return fig
