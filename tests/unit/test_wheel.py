"""The wheel as a user installs it, away from this checkout: ``pip wheel .``, then a clean venv on the system
Python (``--system-site-packages``: Debian's bcc), with PyPI's ``injector`` and ``analysis`` installed beside
ours (the top-level names the package used to take). Everything is checked from that venv, in a directory of its
own, without PYTHONPATH: the CLI, the BPF sources and their headers, the lab's files, the shipped experiments,
``chaosinject.analysis``, old module paths in experiment files, and that none of our modules imports the other
distributions' ``injector``/``analysis``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(venv python, a working directory outside the checkout, notes on the clashing packages)."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found (the wheel is tried on the system Python, for Debian's bcc)")
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "wheels"
    src = tmp / "src"   # a copy of the tracked tree: the build writes build/ and *.egg-info, not in the checkout
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, src], cwd=tmp)
    if built.returncode != 0 and "setuptools" in built.stderr and ("No matching distribution" in built.stderr
                                                                     or "Could not find" in built.stderr):
        pytest.skip(f"pip cannot get the build backend (no package index?): {built.stderr.strip()[-300:]}")
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("chaos_inject-*.whl")
    env_dir = tmp / "venv"
    made = _run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", env_dir], cwd=tmp)
    assert made.returncode == 0, made.stderr
    py = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", py]   # this venv's pip drives the clean one (faster than ensurepip)
    # our dependencies from this test's venv (the wheel's own files come only from the wheel): a path line, so
    # that venv's .pth files (the checkout's editable finder among them) are not run
    deps = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir() and str(p).startswith(
        sys.prefix)]
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
                .stdout.strip())
    (site / "zz_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    inst = _run([*pip, "install", "-q", "--no-deps", wheel], cwd=tmp)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    notes = []
    for name in ("injector", "analysis"):   # PyPI's, where the index has them; else a stand-in that refuses import
        got = _run([*pip, "install", "-q", "--no-deps", name], cwd=tmp, timeout=180)
        if got.returncode == 0:
            notes.append(f"PyPI {name}")
        else:
            (site / name).mkdir()
            (site / name / "__init__.py").write_text(f"raise ImportError('not chaos-inject: the other {name}')\n")
            notes.append(f"stand-in {name} (pip: {got.stderr.strip()[-200:]})")
    work = tmp / "elsewhere"
    work.mkdir()
    return py, work, notes


def test_wheel_installs_everything_and_clashes_with_nothing(venv):
    py, work, notes = venv
    code = textwrap.dedent(r"""
        import importlib, json, pkgutil, sys
        from importlib import resources
        from pathlib import Path
        import chaosinject
        import chaosinject.analysis as ana
        from chaosinject.kernel import abi
        from chaosinject.lab import db_timeout_demo, definition, netlab
        from chaosinject.experiment.loader import load_experiment
        from chaosinject.experiment.spec import current_module
        out = {"file": chaosinject.__file__, "analysis": ana.__file__, "ci": str(ana.proportion_ci(2, 50))}
        out["bpf"] = sorted(str(p.relative_to(abi.BPF_DIR)) for p in abi.BPF_DIR.rglob("*") if p.suffix in (".c", ".h"))
        out["lab"] = [len(definition.load_definition()) > 0, netlab.DB_INIT.is_file(),
                      db_timeout_demo.experiment_path().is_file()]
        ex = resources.files("chaosinject.experiment") / "examples"
        out["examples"] = sorted(p.name for p in ex.iterdir())
        out["seed"] = load_experiment(Path(str(ex / "seed-experiment.json"))).title
        from chaosinject.cli import notebook
        out["notebook"] = notebook.SHIPPED.is_file() and str(notebook.SHIPPED).startswith(sys.prefix)
        out["alias"] = current_module("injector.experiment.actions")  # rename.py: keep
        failed = []
        for m in pkgutil.walk_packages(chaosinject.__path__, "chaosinject."):
            if m.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(m.name)
            except Exception as exc:
                failed.append(f"{m.name}: {type(exc).__name__}: {exc}")
        out["failed"] = failed
        out["foreign"] = sorted(n for n in sys.modules if n.split(".")[0] in ("injector", "analysis"))
        print(json.dumps(out))
    """)
    r = _run([py, "-c", code], cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    site = str(py.parent.parent)
    assert out["file"].startswith(site) and out["analysis"].startswith(site), out
    assert {"classifier.bpf.c", "record.bpf.c", "include/chaos_abi.h", "include/record_abi.h"} <= set(out["bpf"])
    assert out["lab"] == [True, True, True]
    assert out["notebook"], "the shipped notebook is not in the installed package"
    assert {"seed-experiment.json", "seed-chaos-mesh.yaml", "api-delay.yaml"} <= set(out["examples"])
    assert out["seed"] and out["alias"] == "chaosinject.experiment.actions"
    assert out["failed"] == [], out["failed"]
    assert out["foreign"] == [], f"our modules imported another distribution's package ({notes}): {out['foreign']}"
    cli = _run([py.parent / "chaos-inject", "--help"], cwd=work)
    assert cli.returncode == 0 and "--flow" in cli.stdout, cli.stdout + cli.stderr
    top = _run([py, "-c", "import importlib.metadata as m; print(m.distribution('chaos-inject').read_text("
                          "'top_level.txt'))"], cwd=work)
    assert top.stdout.split() == ["chaosinject"], top.stdout + top.stderr
