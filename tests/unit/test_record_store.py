import numpy as np
import pytest

from chaosinject.analysis import load_run
from chaosinject.record import Phases, write_samples


def test_phases_label_by_window_and_reject_unknown_names():
    p = Phases()
    p.mark("baseline", 100)
    p.mark("fault", 200)
    p.mark("recovery", 300)
    p.close(400)
    labels = p.label(np.array([50, 100, 199, 200, 350, 400]))
    assert list(labels) == ["", "baseline", "baseline", "fault", "recovery", ""]
    with pytest.raises(ValueError, match="unknown phase 'chaos'"):
        p.mark("chaos")
    with pytest.raises(ValueError, match="already started"):
        p.mark("fault")


def test_written_part_loads_with_the_documented_columns(tmp_path):
    import json

    p = Phases()
    p.mark("baseline", 1_000)
    p.mark("fault", 2_000)
    p.close(3_000)
    n = write_samples(tmp_path, "request-000001", p, t_ns=[999, 1_500, 2_500], flow="api->db", source="request",
                      latency_ns=[5, 6, 7], ok=[True, True, False], status=[200, 200, 503])
    assert n == 2                                   # the sample before the baseline is not in any phase
    (tmp_path / "meta.json").write_text(json.dumps({
        "run_id": "t", "created": "2026-11-27T00:00:00+00:00", "flow": "api->db", "fault": {}, "engine": "fake",
        "kernel": "x", "seed": None, "phases": p.windows()}))
    (tmp_path / "counters.json").write_text("{}")
    run = load_run(tmp_path)
    df = run.samples
    assert list(df["phase"].astype(str)) == ["baseline", "fault"]
    assert list(df["status"]) == [200, 503] and list(df["ok"]) == [True, False]
