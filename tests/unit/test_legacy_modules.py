"""Experiment files and journals written with the module paths before the import name chaosinject
(``injector.…``, ``analysis.…``) still load: the paths are read as chaosinject's at load time (no top-level
packages of those names are ours), and Chaos Toolkit's layout names (chaosinject.network.actions, ...) are read as
the modules the runner knows."""

from __future__ import annotations

import json

from chaosinject.experiment.loader import load_experiment
from chaosinject.experiment.spec import current_module

OLD_ACTIONS = "chaosinject.experiment.actions"  # rename.py: keep


def _doc(module: str) -> dict:
    return {"title": "old paths", "method": [
        {"type": "action", "name": "fault", "provider": {"type": "python", "module": module,
                                                         "func": "stop_all_faults"}}]}


def test_old_module_paths_read_as_chaosinject(tmp_path):
    assert current_module(OLD_ACTIONS) == "chaosinject.experiment.actions"
    assert current_module("chaosinject.analysis.verdict") == "chaosinject.analysis.verdict"  # rename.py: keep
    assert current_module("chaosinject.network.actions") == "chaosinject.experiment.actions"
    assert current_module("chaosinject.network.probes") == "chaosinject.experiment.probes"
    assert current_module("chaosinject.host.actions") == "chaosinject.experiment.hostactions"
    # not ours: left as written (another package's modules, or no such module of ours)
    assert current_module("chaosinject.nothing_of_ours") == "chaosinject.nothing_of_ours"  # rename.py: keep
    assert current_module("json") == "json" and current_module("analysis") == "analysis"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_doc(OLD_ACTIONS)))
    (act,) = load_experiment(path).method
    assert act.provider.module == "chaosinject.experiment.actions"


def test_an_old_journal_loads_as_the_experiment_it_recorded(tmp_path):
    journal = {"chaoslib-version": None, "experiment": _doc(OLD_ACTIONS), "status": "completed",
               "deviated": False, "steady_states": {"before": None, "after": None, "during": []}, "run": [],
               "rollbacks": [], "chaos-inject": {"run_id": "x"}}
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal))
    exp = load_experiment(path)
    assert exp.title == "old paths" and exp.method[0].provider.module == "chaosinject.experiment.actions"
