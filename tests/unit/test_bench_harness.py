"""bench/_common.py is the benchmarks' one harness: every script uses it, and its figures are computed right."""

from __future__ import annotations

import ast
import importlib.util
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _harness():
    spec = importlib.util.spec_from_file_location("bench_common_under_test", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


C = _harness()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.AST) -> list[str]:
    """Dotted names of everything called in ``tree`` (``C.begin``, ``statistics.median``, ``fmt``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
                out.append(".".join(reversed(parts)))
    return out


def test_there_are_bench_scripts():
    assert len(SCRIPTS) >= 16, [p.name for p in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_uses_the_harness(script):
    tree = _tree(script)
    imports = [(a.name, a.asname) for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert ("_common", "C") in imports, f"{script.name}: no `import _common as C`"
    calls = _calls(tree)
    assert "C.begin" in calls, f"{script.name}: does not start through C.begin (root check, signals, header)"
    # what the harness owns is not done a second way in a script
    assert not any(c in ("statistics.median", "np.median", "numpy.median", "np.percentile", "numpy.percentile")
                   for c in calls), f"{script.name}: a median/percentile of its own (use C.median / C.percentile)"
    assert "signal.signal" not in calls, f"{script.name}: installs signal handlers (C.begin does)"
    assert "os.geteuid" not in calls, f"{script.name}: checks root itself (C.begin(root=...) does)"
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not defined & {"median", "percentile", "quantile", "require_root", "machine", "code_version"}, \
        f"{script.name}: defines {defined & {'median', 'percentile', 'quantile'}}"
    assert "rev-parse" not in script.read_text(), f"{script.name}: reads the commit itself (C.header does)"


HARNESS_FIGURES = {"C.fmt", "C.median", "C.percentile"}
HARNESS_OWN = {"timed", "repeat", "header", "begin", "exit_on_signals", "load_average", "machine", "code_version",
               "median", "percentile", "quantile", "require_root", "require_package"}


def _names_called(node: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_summarises_through_the_harness(script):
    """Its figures go through C.fmt / C.median / C.percentile; no "median (min-max)" of its own (an f-string that
    computes both a min() and a max()); no function of its own named as the harness's (a second `timed`, a
    second header); a formatter of its own (``fmt``, ``fmt_ns``) only fixes C.fmt's arguments."""
    tree = _tree(script)
    calls = set(_calls(tree))
    assert calls & HARNESS_FIGURES, f"{script.name}: prints no figure through C.fmt / C.median / C.percentile"
    own = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
           and n.func.attr in ("median", "percentile") and not (isinstance(n.func.value, ast.Name)
                                                                and n.func.value.id == "C")]
    assert not own, f"{script.name}: lines {own}: a median/percentile method of its own (pandas, numpy): use C's"
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            called = set().union(*(_names_called(v) for v in node.values if isinstance(v, ast.FormattedValue)))
            assert not {"min", "max"} <= called, \
                f"{script.name}:{node.lineno}: formats a min and a max itself (C.fmt is the one formatter)"
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        assert fn.name not in HARNESS_OWN, f"{script.name}:{fn.lineno}: defines {fn.name}, the harness's name"
        if fn.name.startswith("fmt"):
            assert "C.fmt" in _calls(fn), f"{script.name}:{fn.lineno}: {fn.name} formats without C.fmt"


@pytest.mark.parametrize("source, message", [
    ("def fmt(v):\n    return f'{C.median(v)} ({min(v)}-{max(v)})'\n", "formats a min and a max"),
    ("def timed(fn):\n    return 0.0\n\nprint(C.median([1]))\n", "defines timed"),
    ("def fmt_ms(v):\n    return '%.1f' % C.median(v)\n", "fmt_ms formats without C.fmt"),
    ("print(C.fmt([1]), df['x'].median())\n", "a median/percentile method of its own"),
    ("print(sum([1]))\n", "prints no figure"),
], ids=["min-max", "timed", "fmt", "pandas", "no-figure"])
def test_the_summary_check_catches_what_it_forbids(source, message, tmp_path):
    """The check above on a script that does what it forbids."""
    bad = tmp_path / "bad.py"
    bad.write_text("import _common as C\n\n" + source)
    with pytest.raises(AssertionError, match=message):
        test_every_script_summarises_through_the_harness(bad)


CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "clock_gettime"}
# Clock reads by hand that stay, by script and function, with why the harness's timer does not fit.
HAND_TIMED = {
    ("classifier_cost.py", "sample"): "per-packet RTT in the echo loop: a bound clock, no harness call per packet",
    ("experiment_halt.py", "netns_run"): "the offset between wall and monotonic clocks, to place the journal's "
                                         "wall-clock times",
    ("fault_onset.py", "tick_time"): "the offset between boot-time and monotonic clocks, to place a process's "
                                     "start from /proc",
}


def _enclosing(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node -> the name of the innermost function holding it ("" at module level)."""
    owner: dict[ast.AST, str] = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            owner[child] = inner
            visit(child, inner)
    visit(tree, "")
    return owner


def _is_clock(node: ast.AST) -> bool:
    """``time.perf_counter`` and friends, called or not."""
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Attribute) and node.attr in CLOCKS and isinstance(node.value, ast.Name)
            and node.value.id == "time")


def hand_timing(path: Path, allowed=HAND_TIMED) -> list[str]:
    """Where ``path`` times code by hand: perf_counter used at all (the harness's clock), or a clock read with
    something subtracted from it (``time.monotonic() - t0``), outside ``allowed``."""
    tree = _tree(path)
    owner = _enclosing(tree)
    found = []
    for node in ast.walk(tree):
        perf = isinstance(node, ast.Attribute) and _is_clock(node) and node.attr.startswith("perf_counter")
        span = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _is_clock(node.left)
        if (perf or span) and (path.name, owner.get(node, "")) not in allowed:
            found.append((node.lineno, f"{path.name}:{node.lineno} in {owner.get(node) or 'module'}"))
    return [where for _, where in sorted(found)]


@pytest.mark.parametrize("script", [*SCRIPTS, BENCH / "_netkit.py"], ids=lambda p: p.name)
def test_no_script_times_by_hand(script):
    """Spans are timed with C.Stopwatch / C.timed / C.timed_ms / C.repeat, one clock for every figure."""
    assert not hand_timing(script), f"times by hand (use C.Stopwatch / C.timed): {hand_timing(script)}"


def test_the_hand_timing_check_catches_it(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\n\ndef run():\n    t0 = time.perf_counter()\n    return time.monotonic() - t0\n"
                   "\ndeadline = time.monotonic() + 5\nwhile time.monotonic() < deadline:\n    pass\n")
    assert hand_timing(bad) == ["bad.py:4 in run", "bad.py:5 in run"]
    for (name, function), why in HAND_TIMED.items():   # each exception still needed
        assert why and any(f.endswith(f" in {function}") for f in hand_timing(BENCH / name, allowed={})), \
            f"HAND_TIMED lists {name}:{function}, which no longer reads a clock by hand"


def test_help_works_for_every_script_without_root():
    """`python bench/X.py --help` prints usage and exits 0, with the process made to look unprivileged (the root
    check comes after the arguments are parsed)."""
    wrapper = textwrap.dedent("""
        import os, runpy, sys
        os.geteuid = lambda: 65534
        path = sys.argv[1]
        sys.argv = [path, "--help"]
        runpy.run_path(path, run_name="__main__")
    """)
    procs = {s.name: subprocess.Popen([sys.executable, "-c", wrapper, str(s)], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for s in SCRIPTS}
    failed = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or "usage:" not in out:
            failed[name] = (proc.returncode, (out + err)[-400:])
    assert not failed, failed


def test_percentile_is_linear_interpolation_between_closest_ranks():
    assert C.percentile([4, 1, 3, 2], 50) == 2.5
    assert C.percentile([1, 2, 3, 4], 0) == 1
    assert C.percentile([1, 2, 3, 4], 100) == 4
    assert C.percentile([10, 20], 25) == 12.5
    assert C.percentile([7], 99) == 7
    # p90 of 1..10: rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
    assert C.percentile(range(1, 11), 90) == pytest.approx(9.1)
    rng = random.Random(3)
    for n in (2, 3, 10, 101, 1000):
        values = [rng.lognormvariate(0, 1) for _ in range(n)]
        for p in (0, 1, 5, 25, 50, 90, 95, 99, 99.9, 100):
            assert C.percentile(values, p) == pytest.approx(float(np.percentile(values, p)), rel=1e-12), (n, p)
    with pytest.raises(ValueError):
        C.percentile([], 50)
    with pytest.raises(ValueError):
        C.percentile([1, 2], 101)
    assert C.median([3, 1, 2, 10]) == C.percentile([3, 1, 2, 10], 50) == 2.5


def test_the_formatter():
    assert C.fmt([3, 1, 2]) == "2.00 (1.00-3.00)"
    assert C.fmt([0.001, 0.002, 0.004], " ms", 1e3, 1, n=True) == "2.0 ms (1.0-4.0, n=3)"
    assert C.fmt([101.25, 99.0, 120.0], digits=1, range_digits=0, width=7) == "  101.2 (99-120)"
    assert C.fmt([2e6, 4e6, 1e6], " M/s", 1e-6) == "2.00 M/s (1.00-4.00)"
    assert C.fmt([-1.5, 0.5, 2.0], " ms", digits=1, sign=True) == "+0.5 ms (-1.5 to +2.0)"
    assert C.fmt([-2, -1, 3], digits=0) == "-1 (-2 to 3)"
    with pytest.raises(ValueError):
        C.fmt([])


def test_timing_helpers():
    calls = []
    times = C.repeat(lambda: calls.append(1), 5, warmup=2)
    assert len(calls) == 7 and len(times) == 5 and all(t >= 0 for t in times)
    assert C.timed(lambda: __import__("time").sleep(0.01)) >= 0.009
    assert C.timed_ms(lambda: __import__("time").sleep(0.01)) >= 9
    with C.Stopwatch() as sw:
        __import__("time").sleep(0.01)
        running = sw.s                 # read inside: the time so far
    assert 0 < running <= sw.s and sw.s >= 0.009 and sw.ms == pytest.approx(sw.s * 1e3)
    assert sw.s == sw.s                # stopped at the block's end


def test_header_names_commit_kernel_cpus_and_load():
    line = C.header("x")
    assert line.startswith("# x  ")
    assert "kernel " in line and " CPUs" in line and "load " in line and "code " in line
    assert "code unknown" not in line  # this checkout is a git work tree


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, None)])
def test_signals_run_the_clean_up(sig, code, tmp_path):
    """After C.begin's signal setup, SIGTERM and SIGINT unwind the stack: the script's finally blocks run."""
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(f"""
        import importlib.util, os, signal, sys, time
        spec = importlib.util.spec_from_file_location("c", {str(BENCH / "_common.py")!r})
        C = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(C)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a parent may leave it: the harness must take it back
        C.exit_on_signals()
        try:
            os.kill(os.getpid(), {int(sig)})
            time.sleep(5)
        finally:
            open({str(marker)!r}, "w").write("yes")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert marker.read_text() == "yes"
    if code is not None:
        assert proc.returncode == code, proc.stderr
    else:
        assert "KeyboardInterrupt" in proc.stderr and proc.returncode != 0


def test_an_interpreter_without_the_package_is_told_how_to_run():
    """-S: no site-packages, so no chaosinject (the venv's editable install): the harness says which python."""
    proc = subprocess.run([sys.executable, "-S", str(BENCH / "apply_time.py"), "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert "chaosinject is not importable" in proc.stderr and ".venv/bin/python" in proc.stderr
