"""The benchmarks' one harness: setup, signals, the header line, timing, and the one way figures are summarised.

Every script in bench/ imports this module (``import _common as C``; tests/unit/test_bench_harness.py checks it)
and starts with ``C.begin(name, root=...)`` after parsing its arguments, so ``--help`` never needs root:

* setup: the checkout (``REPO``) and bench/ on ``sys.path`` for the ``bench``/``tests`` helpers; the
  ``chaosinject`` package itself comes from the venv (``sudo make setup``: ``.venv/bin/python``), and an
  interpreter without it stops at the import with how to run the script;
* signals: SIGINT -> KeyboardInterrupt, SIGTERM / SIGHUP -> SystemExit, so every ``finally`` clean-up runs (in a
  forked child of ours the signal ends only the child: see ``exit_on_signals``);
* the header: script, UTC time, host, kernel, CPUs, load average at the start, and the commit measured (with a
  note when the imported code had uncommitted edits);
* timing: ``Stopwatch`` (a span: ``with C.Stopwatch() as sw: ...``, then ``sw.s`` / ``sw.ms``; read while it
  runs for the time so far), ``timed`` / ``timed_ms`` (one call), ``repeat`` (N calls after a warm-up); scripts
  time only through these (tests/unit/test_bench_harness.py lists the few exceptions and why); scripts that
  compare several cases interleave them per round themselves, so a shared CPU's drift hits them alike;
* figures: ``median``, ``percentile`` (the one definition: linear interpolation between closest ranks, as
  numpy's default), ``fmt`` (the one "median (min-max)" formatter).

Benchmarks only: nothing here is imported by the product, and nothing here imports the product (namespaces,
packets and rule sets for the kernel benchmarks are in ``_netkit.py``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
for _p in (str(BENCH), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def require_package() -> None:
    """The scripts import ``chaosinject`` from the venv (the folders here are injector/, analysis/, bpf/, mapped
    by setup.py): say how to run them when this interpreter does not have it."""
    if importlib.util.find_spec("chaosinject") is None:
        sys.exit(f"chaosinject is not importable from {sys.executable}: run the benchmark with {VENV_PYTHON} "
                 "(`sudo make setup` makes it)")


require_package()


# -- setup ---------------------------------------------------------------------------------------------------
def require_root(why: str = "BPF programs, network namespaces") -> None:
    if os.geteuid() != 0:
        sys.exit(f"this benchmark needs root ({why}): run it with sudo")


def exit_on_signals() -> None:
    """SIGINT -> KeyboardInterrupt, SIGTERM / SIGHUP -> SystemExit(128 + signal), so try/finally clean-up runs.

    In a fork of this process (pyroute2 0.9 creates netns sockets in a forked helper and ends it with SIGTERM;
    Ctrl-C reaches the whole process group) the handler only ends the child: raising there would unwind the
    parent's copied stack and run its clean-up in the child."""
    main_pid = os.getpid()

    def handler(signum, _frame):
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


# -- the header ----------------------------------------------------------------------------------------------
def machine() -> str:
    """Host, kernel, CPUs (and their model)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} kernel {platform.release()}, {os.cpu_count()} CPUs" + (f" ({model})" if model else "")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def code_version(paths: Sequence[str] = ("injector", "bpf")) -> str:
    """Commit of the checkout, and whether the code the benchmark imports (``paths``, relative to the checkout:
    injector/ and bpf/ unless told) has local edits."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted ' + '/'.join(paths) + ' edits' if dirty else ''}"


def header(name: str, paths: Sequence[str] = ("injector", "bpf")) -> str:
    return (f"# {name}  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  {machine()}  "
            f"load {load_average()}  code {code_version(paths)}")


def begin(name: str, *, root: bool = True, paths: Sequence[str] = ("injector", "bpf"),
          why: str = "BPF programs, network namespaces") -> "Stopwatch":
    """A benchmark's start, after its arguments are parsed: the root check (``root``), signals -> exceptions,
    the header line (``paths``: the code whose edits it reports). Returns a running stopwatch (the total)."""
    if root:
        require_root(why)
    exit_on_signals()
    print(header(name, paths), flush=True)
    return Stopwatch()


# -- timing --------------------------------------------------------------------------------------------------
class Stopwatch:
    """A span on perf_counter_ns, running from creation (or ``with`` entry) until the ``with`` block ends;
    ``s`` / ``ms`` read while it runs give the time so far."""

    def __init__(self) -> None:
        self._start = time.perf_counter_ns()
        self._end: int | None = None

    def __enter__(self) -> "Stopwatch":
        self._start, self._end = time.perf_counter_ns(), None
        return self

    def __exit__(self, *_exc) -> None:
        self._end = time.perf_counter_ns()

    @property
    def s(self) -> float:
        return ((self._end if self._end is not None else time.perf_counter_ns()) - self._start) / 1e9

    @property
    def ms(self) -> float:
        return self.s * 1e3



def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` took."""
    with Stopwatch() as sw:
        fn()
    return sw.s


def timed_ms(fn: Callable[[], object]) -> float:
    """Milliseconds one call of ``fn`` took."""
    return timed(fn) * 1e3


def repeat(fn: Callable[[], object], n: int, warmup: int = 0) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` calls not kept, then ``n`` kept."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(n)]


# -- figures -------------------------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (p in [0, 100]) by linear interpolation between the closest ranks: rank
    h = (n - 1) p / 100 counted from 0, value x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]) of the
    sorted values (Hyndman & Fan type 7; numpy.percentile's default). The benchmarks' one definition."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside [0, 100]")
    h = (len(ordered) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (h - lo)


def fmt(values: Iterable[float], unit: str = "", scale: float = 1.0, digits: int = 2, *,
        range_digits: int | None = None, width: int = 0, sign: bool = False, n: bool = False) -> str:
    """The one "median (min-max)" formatter: ``values`` times ``scale``, the median with ``digits`` decimals
    (right-aligned in ``width``) and ``unit`` after it, the range with ``range_digits`` (default ``digits``),
    and ", n=N" when ``n``. ``sign`` prints + on positive figures; the range then reads "min to max", as it
    does whenever it has a negative end."""
    v = [x * scale for x in values]
    if not v:
        raise ValueError("fmt of no values")
    rd = digits if range_digits is None else range_digits
    plus = "+" if sign else ""
    lo, hi = min(v), max(v)
    sep = " to " if sign or lo < 0 else "-"
    count = f", n={len(v)}" if n else ""
    return f"{median(v):{plus}{width}.{digits}f}{unit} ({lo:{plus}.{rd}f}{sep}{hi:{plus}.{rd}f}{count})"
