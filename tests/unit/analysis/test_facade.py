"""The analysis facade: __all__ complete, no heavy or privileged imports."""
import importlib
import json
import subprocess
import sys

from chaosinject import analysis

SUBMODULES = ["_types", "proportions", "quantiles", "compare", "mann_whitney", "quantile_shift", "tail_rank",
              "dependence", "priors", "sequential", "phases", "checks", "verdict", "rundir"]


def test_all_lists_every_public_name_of_every_submodule():
    missing = []
    for name in SUBMODULES:
        mod = importlib.import_module(f"analysis.{name}")
        for public in mod.__all__:
            if public not in analysis.__all__:
                missing.append(f"{name}.{public}")
    assert missing == []


def test_all_names_exist_and_are_unique():
    assert len(set(analysis.__all__)) == len(analysis.__all__)
    for name in analysis.__all__:
        assert hasattr(analysis, name), name


def test_facade_exports_nothing_public_outside_all():
    public = {n for n in vars(analysis) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(analysis, n)).__name__ == "module"}
    assert public - modules - {"annotations"} <= set(analysis.__all__)


def test_import_does_not_pull_bcc_pyroute2_or_matplotlib():
    code = ("import sys, json, analysis; "
            "print(json.dumps([m for m in ('bcc', 'pyroute2', 'matplotlib', 'injector') "
            "if any(k == m or k.startswith(m + '.') for k in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_plots_is_the_matplotlib_user_and_uses_agg():
    code = "import chaosinject.analysis.plots, matplotlib; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().lower() == "agg"


def test_invalid_input_is_a_valueerror_and_analysis_error():
    assert issubclass(analysis.InvalidInput, ValueError)
    assert issubclass(analysis.InvalidInput, analysis.AnalysisError)
    assert issubclass(analysis.InvalidRun, analysis.InvalidInput)
