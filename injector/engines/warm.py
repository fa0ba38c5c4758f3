"""Fill the compiled-program cache for this kernel, so that no fault pays bcc's compile (~1 s) on its way in.

Every classifier variant the engines load on this kernel (engines/common.py ``classifier_config``: with or
without the hold recording, seeded or not, and steering into netem classes where the kernel has netem) is loaded
once, which compiles it if the cache (kernel/progcache.py) lacks it, and closed at once. Nothing stays in the
kernel: the programs and maps are held by file descriptors of this process only. `chaos-inject doctor
--warm-cache` runs it; scripts/setup-host.sh and the Ansible install role run that after an install.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from ..errors import Unsupported
from ..kernel.bpf import ClassifierConfig, ClassifierProgram
from ..kernel.probe import Capabilities
from .common import MIN_RULES, classifier_config


@dataclass(frozen=True)
class Warmed:
    variant: str
    seconds: float
    compiled: bool          # False: it was in the cache already
    unsupported: str = ""   # why this kernel cannot load this variant (e.g. no BPF ring buffer for the hold)


def classifier_variants(caps: Capabilities) -> list[tuple[str, ClassifierConfig]]:
    """(name, config) of every classifier the engines would load here for up to MIN_RULES rules on Ethernet."""
    steering = [False, True] if caps.netem and caps.prio else [False]
    out = []
    for steer, hold, seeded in itertools.product(steering, (False, True), (False, True)):
        name = ", ".join([("netem steering" if steer else "ebpf/edt"), ("hold recorded" if hold else "no hold"),
                          ("seeded" if seeded else "unseeded")])
        out.append((name, classifier_config(MIN_RULES, seed=1 if seeded else None, steer=steer, hold=hold)))
    return out


def warm_program_cache(caps: Capabilities) -> list[Warmed]:
    """Load (compiling where needed) every variant once; returns what each took."""
    from ..kernel import progcache

    if not progcache.ENABLED:
        raise Unsupported("the compiled-program cache is off (CHAOS_INJECT_PROG_CACHE=off): nothing to warm")
    results = []
    for name, config in classifier_variants(caps):
        before = set(progcache.cached_files())
        start = time.monotonic()
        try:
            ClassifierProgram(config).close()
        except Unsupported as exc:
            results.append(Warmed(name, time.monotonic() - start, False, str(exc)))
            continue
        compiled = set(progcache.cached_files()) != before
        results.append(Warmed(name, time.monotonic() - start, compiled))
    return results


def format_warmed(results: list[Warmed]) -> str:
    lines = ["compiled programs (cache: kernel/progcache.py):"]
    for r in results:
        what = (f"not for this kernel: {r.unsupported}" if r.unsupported
                else f"compiled and cached in {r.seconds:.2f} s" if r.compiled else f"cached already ({r.seconds * 1e3:.0f} ms to load)")
        lines.append(f"  classifier ({r.variant}): {what}")
    return "\n".join(lines)
