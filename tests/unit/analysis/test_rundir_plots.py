"""Run directory round trip and schema errors; plots return Figures."""
import json

import numpy as np
import pandas as pd
import pytest

from chaosinject import analysis
from chaosinject.analysis import InvalidRun, Outcome, evaluate, example_run, load_run, phases_from_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return example_run(tmp_path_factory.mktemp("run"), rng=3)


def test_example_run_follows_the_schema(run):
    df = run.samples
    assert list(df.columns) == list(analysis.SAMPLE_COLUMNS)
    assert df["t_ns"].dtype == np.int64 and df["latency_ns"].dtype == np.int64
    assert df["ok"].dtype == bool and df["status"].dtype == np.int16
    assert list(df["phase"].cat.categories) == ["baseline", "fault", "recovery"]
    assert set(df["source"].astype(str)) == {"oneway", "rtt", "request"}
    assert (df.loc[df["source"] != "request", "ok"]).all()
    assert (df.loc[df["source"] != "request", "status"] == 0).all()
    for k in ("run_id", "created", "flow", "fault", "engine", "kernel", "seed", "phases"):
        assert k in run.meta
    for name in run.phases:
        s, e = run.phase_window_ns(name)
        t = df.loc[df["phase"] == name, "t_ns"]
        assert s <= t.min() and t.max() <= e
    assert run.label_mismatches() == {"baseline": 0, "fault": 0, "recovery": 0}
    (rule,) = run.counters.values()
    assert set(rule) == {"matched", "dropped", "corrupted", "duplicated", "bytes"}


def test_example_run_is_seeded(tmp_path):
    a = example_run(tmp_path / "a", rng=5, phase_seconds=2)
    b = example_run(tmp_path / "b", rng=5, phase_seconds=2)
    pd.testing.assert_frame_equal(a.samples, b.samples)
    assert a.meta["run_id"] == b.meta["run_id"]


def test_example_run_verdict_sees_the_fault(run):
    v = evaluate(phases_from_run(run))
    assert v.outcome is Outcome.VIOLATED
    assert any(c.phase == "fault" and c.outcome is Outcome.VIOLATED for c in v.checks)
    assert all(c.outcome is not Outcome.VIOLATED for c in v.phase("recovery"))


def test_load_run_reads_parts_directory(tmp_path, run):
    (tmp_path / "samples").mkdir()
    half = len(run.samples) // 2
    run.samples.iloc[:half].to_parquet(tmp_path / "samples" / "000001.parquet")
    run.samples.iloc[half:].to_parquet(tmp_path / "samples" / "000002.parquet")
    for f in ("meta.json", "counters.json"):
        (tmp_path / f).write_text((run.path / f).read_text())
    again = load_run(tmp_path)
    assert len(again.samples) == len(run.samples)


def _copy(run, dst, samples=None, meta=None, counters=None):
    dst.mkdir(exist_ok=True)
    (samples if samples is not None else run.samples).to_parquet(dst / "samples.parquet")
    (dst / "meta.json").write_text(json.dumps(meta if meta is not None else run.meta))
    (dst / "counters.json").write_text(json.dumps(counters if counters is not None else run.counters))
    return dst


def test_schema_errors_are_invalid_run(tmp_path, run):
    with pytest.raises(InvalidRun):
        load_run(tmp_path / "nope")
    with pytest.raises(InvalidRun, match="lack columns"):
        load_run(_copy(run, tmp_path / "a", samples=run.samples.drop(columns=["status"])))
    bad = run.samples.copy()
    bad["phase"] = bad["phase"].astype(str).replace({"fault": "chaos"})
    with pytest.raises(InvalidRun, match="unknown phase"):
        load_run(_copy(run, tmp_path / "b", samples=bad))
    meta = dict(run.meta)
    del meta["phases"]
    with pytest.raises(InvalidRun, match="phases"):
        load_run(_copy(run, tmp_path / "c", meta=meta))
    with pytest.raises(InvalidRun, match="non-negative"):
        load_run(_copy(run, tmp_path / "d", counters={"r": {"matched": -1}}))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "meta.json").write_text("{not json")
    with pytest.raises(InvalidRun, match="JSON"):
        load_run(tmp_path / "e")
    assert issubclass(InvalidRun, ValueError)


def test_plots_return_figures(run):
    import matplotlib.figure

    from chaosinject.analysis import plots

    ph = phases_from_run(run)
    v = evaluate(ph)
    figs = [
        plots.latency_cdf(run, verdict=v),
        plots.latency_cdf(ph, tail=False),
        plots.latency_over_time(run, bin_s=2.0),
        plots.quantile_comparison(ph["baseline"], ph["fault"]),
        plots.quantile_comparison(ph["baseline"].latencies[:100], ph["fault"].latencies[:100]),  # too few
        plots.verdict_figure(v),
    ]
    for f in figs:
        assert isinstance(f, matplotlib.figure.Figure)
        assert f.axes and any(ax.has_data() or ax.patches for ax in f.axes)


def test_dependence_figure_shows_episodes_and_what_the_verdict_found():
    import sys
    from pathlib import Path

    from chaosinject.analysis import PhaseData, plots

    sys.path.insert(0, str(Path(__file__).parent))
    from dependent_synth import markov_episodes

    rng = np.random.default_rng(31)
    data = {"baseline": rng.lognormal(3.0, 0.5, 20_000), "fault": markov_episodes(rng, 20_000)}
    v = evaluate({k: PhaseData(a) for k, a in data.items()}, latency_unit_ns=False)
    fig = plots.dependence_figure(data, verdict=v, max_lag=50)
    (ax,) = fig.axes
    curves = {line.get_label().split(":")[0]: line.get_ydata() for line in ax.get_lines() if len(line.get_ydata()) > 2}
    assert set(curves) == {"baseline", "fault"} and all(len(c) == 50 for c in curves.values())
    # episodes of ~100 samples: the exceedances' autocorrelation stays far above the independent band (0.014)
    # for dozens of lags (measured 0.15 at lag 1, 0.12 at lag 25); independent: within ~0.02
    assert curves["fault"][:25].min() > 0.07
    assert abs(curves["baseline"][:10]).max() < 0.04
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("fault: lag-1 ") and "(widened)" in t for t in labels)
    # the same figure from a run directory's phases (no verdict): one curve per phase
    fig = plots.dependence_figure(data, max_lag=5)
    assert len([ln for ln in fig.axes[0].get_lines() if len(ln.get_ydata()) > 2]) == 2
