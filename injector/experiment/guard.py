"""Halt guard: watches live samples (and/or a Prometheus query) while the method runs and calls for a halt.

Checks (runbook defaults, configurable in the experiment's ``chaos-inject`` extension and on the CLI):
- error rate > ``max_error_rate`` (5 %): :class:`analysis.ErrorRateMonitor`, a mixture SPRT;
- p99 > ``latency_max_ratio`` (2) x the baseline's: :class:`analysis.QuantileExceedanceMonitor` with its
  threshold from the baseline's upper confidence bound of p99.
Both are anytime-valid: the guard looks every ``interval`` (0.2 s) for as long as the method runs and the
probability of a false alarm stays <= ``alpha`` (1 %) each, whatever the number of looks. Both are
dependence-aware (congestion episodes, error bursts): the baseline's samples and request outcomes, kept in
time order, give each monitor its prior variance inflation, and the monitored stream its running one; the
evidence is tempered by it (see :mod:`chaosinject.analysis.sequential`). The notes say what was found. A Prometheus
query is compared with its ``max`` on each look (an aggregated rate from Prometheus is already a
smoothed statistic; one value above the limit halts).

Any source with ``read_new()`` returning a mapping with ``latency_ns`` and ``ok`` arrays can feed it (the
built-in :class:`~chaosinject.experiment.http_load.HttpLoad`, the lab's request recorder).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .loader import substitute
from .model import GuardSpec

__all__ = ["HaltGuard", "resolve_guard"]

log = logging.getLogger("chaos_inject.experiment")


def _field(batch: Any, name: str, default: Any) -> Any:
    """A batch is a mapping (our load generator) or an object with array attributes (the lab's rows)."""
    if isinstance(batch, dict) or hasattr(batch, "get"):
        return batch.get(name, default)
    return getattr(batch, name, default)


class HaltGuard:
    def __init__(self, spec: GuardSpec, sources: list[Any], on_breach: Callable[[str], None]):
        self.spec = spec
        self.sources = list(sources)
        self.on_breach = on_breach
        self.notes: list[str] = []
        self.breach: str | None = None
        self.breached_at_ns: int | None = None
        self.armed_at_ns: int | None = None
        self.looks = 0
        self._baseline: list[np.ndarray] = []
        self._baseline_ok: list[np.ndarray] = []   # the baseline's request outcomes in time order (error bursts)
        self._armed = False
        self._errors = None
        self._latency = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_prom = 0.0
        if spec.enabled and self.sources:
            # import the monitors' package now, before any load starts: imported later (0.5 s of numpy/scipy,
            # holding the GIL) it stalls the in-process load generator during the baseline and inflates the
            # baseline's latency bound, and with it the halt threshold
            from chaosinject import analysis  # noqa: F401

    @property
    def watching(self) -> bool:
        return bool(self.sources) or bool(self.spec.prometheus_query)

    def start(self) -> None:
        """Start reading the sources (baseline collection until :meth:`arm`)."""
        if not self.spec.enabled or not self.watching or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="chaos-inject-guard", daemon=True)
        self._thread.start()

    def baseline_count(self) -> int:
        with self._lock:
            return int(sum(a.size for a in self._baseline))

    def wait_for_baseline(self, stop: threading.Event) -> None:
        """Until enough baseline latencies for the quantile's confidence bound, or ``baseline_max_s``."""
        if not self.spec.enabled or not self.sources or self.spec.latency_max_ratio is None:
            return
        from chaosinject.analysis import min_samples_for_quantile

        need = min_samples_for_quantile(self.spec.latency_quantile, 0.95)
        deadline = time.monotonic() + self.spec.baseline_max_s
        while self.baseline_count() < need and time.monotonic() < deadline and not stop.is_set():
            stop.wait(0.05)

    def arm(self) -> None:
        """Baseline ends, watching begins (the method starts)."""
        if not self.spec.enabled:
            self.notes.append("halt guard disabled")
            return
        if not self.watching:
            return
        from chaosinject.analysis import ErrorRateMonitor, InvalidInput, QuantileExceedanceMonitor

        with self._lock:
            base = np.concatenate(self._baseline) if self._baseline else np.zeros(0)
            # one source: its baseline is in time order; several: interleaved by look, pooled (no time order),
            # so no prior inflation is taken from it (the notes say so)
            ordered = len(self.sources) == 1
            base_ok = np.concatenate(self._baseline_ok) if self._baseline_ok and ordered else None
            if self.spec.max_error_rate is not None and self.sources:
                self._errors = ErrorRateMonitor(self.spec.max_error_rate, alpha=self.spec.alpha,
                                                baseline_ok=base_ok)
            if self.spec.latency_max_ratio is not None and self.sources:
                try:
                    self._latency = QuantileExceedanceMonitor.from_baseline(
                        base, factor=self.spec.latency_max_ratio, quantile=self.spec.latency_quantile,
                        alpha=self.spec.alpha, ordered=ordered)
                    self.notes.append(
                        f"latency guard: halt if p{self.spec.latency_quantile * 100:g} > "
                        f"{self._latency.latency_threshold / 1e6:.3f} ms ({self.spec.latency_max_ratio:g}x the "
                        f"baseline's upper bound, {base.size} baseline samples; {self._latency.dependence_text()})")
                except InvalidInput as exc:
                    self.notes.append(f"latency guard off: {exc}")
            if self._errors is not None:
                self.notes.append(f"error-rate guard: halt if the error rate is above "
                                  f"{self.spec.max_error_rate:.2%} (alpha {self.spec.alpha:g}; "
                                  f"{self._errors.dependence_text()})")
            if self.spec.prometheus_query:
                self.notes.append(f"prometheus guard: halt if {self.spec.prometheus_query!r} > "
                                  f"{self.spec.prometheus_max:g}")
            self._armed = True
            self.armed_at_ns = time.monotonic_ns()

    def disarm(self) -> None:
        with self._lock:
            self._armed = False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"breach": self.breach, "looks": self.looks, "notes": list(self.notes),
                               "baseline_samples": self.baseline_count()}
        if self._errors is not None:
            out["error_rate"] = self._errors.reason()
        if self._latency is not None:
            out["latency"] = self._latency.reason()
            out["latency_threshold_ns"] = self._latency.latency_threshold
        return out

    # -- the watching thread -----------------------------------------------------------------------------
    def _look(self) -> str | None:
        for src in self.sources:
            batch = src.read_new()
            lat = np.asarray(_field(batch, "latency_ns", ()), dtype=np.float64)
            ok = np.asarray(_field(batch, "ok", np.ones(lat.shape, bool)), dtype=bool)
            with self._lock:
                if not self._armed:
                    if self.armed_at_ns is None:
                        # failed requests' timeouts are not normal latency
                        self._baseline.append(lat[ok])
                        self._baseline_ok.append(ok.ravel())
                    continue
                if self._errors is not None and ok.size and self._errors.update_ok(ok):
                    return f"error rate breach: {self._errors.reason()}"
                if self._latency is not None and lat.size and self._latency.update_latencies(lat):
                    return (f"latency breach: p{self._latency.quantile * 100:g} above "
                            f"{self._latency.latency_threshold / 1e6:.3f} ms: {self._latency.reason()}")
        if self._armed and self.spec.prometheus_query and time.monotonic() - self._last_prom >= 1.0:
            self._last_prom = time.monotonic()
            from .. import httpclient

            try:
                v = httpclient.query_value(httpclient.instant_query(self.spec.prometheus_url,
                                                                    self.spec.prometheus_query, timeout_s=2.0))
            except httpclient.PrometheusError as exc:
                log.warning("halt guard: prometheus query failed: %s", exc)
                return None
            vals = list(v.values()) if isinstance(v, dict) else [v]
            high = [x for x in vals if isinstance(x, float) and x > self.spec.prometheus_max]
            if high:
                return f"prometheus breach: {self.spec.prometheus_query} = {max(high):g} > {self.spec.prometheus_max:g}"
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                reason = self._look()
            except Exception as exc:  # noqa: BLE001 - a broken source must not kill the guard silently
                log.error("halt guard: %s", exc)
                reason = None
            self.looks += 1
            if reason and self.breach is None:
                self.breach = reason
                self.breached_at_ns = time.monotonic_ns()
                try:
                    self.on_breach(reason)
                finally:
                    self._armed = False
            self._stop.wait(self.spec.interval_s)


def resolve_guard(g: GuardSpec, conf: dict, secrets: dict) -> GuardSpec:
    """``${name}`` in the extension's URLs and query, like everywhere else in the file."""
    if g.load is not None:
        g = replace(g, load=replace(g.load, url=substitute(g.load.url, conf, secrets)))
    if g.prometheus_url:
        g = replace(g, prometheus_url=substitute(g.prometheus_url, conf, secrets),
                    prometheus_query=substitute(g.prometheus_query, conf, secrets))
    return g
