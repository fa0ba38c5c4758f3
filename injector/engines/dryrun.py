"""What a dry run can say about this kernel without changing anything: read-only looks at the qdisc modules the
engines need (the capability probe itself makes a throwaway namespace, which a dry run must not)."""

from __future__ import annotations

import os
from pathlib import Path

# engine -> (qdisc module, a function the module defines, as /proc/kallsyms lists it once built in or loaded)
_QDISCS = {"netem": (("sch_netem", "netem_enqueue"), ("sch_prio", "prio_enqueue")),
           "edt": (("sch_fq", "fq_enqueue"),)}


def kernel_has_qdisc(module: str, symbol: str, *, kallsyms: str = "/proc/kallsyms",
                     modules_dir: str | None = None) -> bool:
    """Built in or loaded (its symbol in kallsyms), or loadable (a module file for this kernel)."""
    try:
        with open(kallsyms, "rb") as f:
            needle = f" {symbol}".encode()
            for line in f:
                if line.rstrip().endswith(needle) or f" {symbol}\t".encode() in line:
                    return True
    except OSError:
        pass
    base = Path(modules_dir or f"/lib/modules/{os.uname().release}")
    return base.is_dir() and any(base.rglob(f"{module}.ko*"))


def dry_run_warnings(fault, engine: str = "auto", has_qdisc=kernel_has_qdisc) -> list[str]:
    """Warnings for faults that only queueing engines serve, where this kernel lacks their qdiscs."""
    from .select import ENGINES, PREFERENCE

    features = set(fault.features())
    candidates = [engine] if engine != "auto" else [n for n in PREFERENCE if features <= ENGINES[n].serves]
    if not candidates or any(n not in _QDISCS for n in candidates):
        return []    # an engine without qdiscs of its own can serve it (the run checks the rest)
    missing = {n: [m for m, sym in _QDISCS[n] if not has_qdisc(m, sym)] for n in candidates}
    if not all(missing.values()):
        return []
    others = set().union(*(ENGINES[n].serves for n in PREFERENCE if n not in _QDISCS))
    beyond = sorted(features - others) or sorted(features)
    lacks = "; ".join(f"the {n} engine needs {', '.join(m)}" for n, m in missing.items())
    return [f"warning: this kernel cannot translate {', '.join('--' + f for f in beyond)} "
            f"({lacks}: neither built in nor a loadable module here); the run would stop before any change "
            f"(exit 3). It runs on a kernel with those qdiscs (`chaos-inject doctor` there)."]
