"""Which engine serves which fault on this kernel, and the choice for --engine auto.

auto picks, among the engines that are available here and serve every requested feature, the most precise:
faults that need no queueing go to the eBPF classifier (exact per packet, no qdisc change); delay and rate go to
netem when the kernel has it, else to the userspace engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InvalidSpec, Unsupported
from ..kernel.probe import Capabilities
from ..spec.fault import FaultSpec

from .features import ALL_FEATURES, STATELESS  # noqa: F401 (re-exported: older imports)
from .features import EBPF_FEATURES, EDT_FEATURES, NETEM_FEATURES, USERSPACE_FEATURES


@dataclass(frozen=True)
class EngineInfo:
    name: str
    serves: frozenset[str]
    precision: str
    needs: tuple[tuple[str, Callable[[Capabilities], bool]], ...]
    built: bool = True

    def missing(self, caps: Capabilities) -> list[str]:
        if not self.built:
            return ["an implementation (not built yet)"]
        return [what for what, ok in self.needs if not ok(caps)]


_BPF_NEEDS = (("root", lambda c: c.root), ("bcc (python3-bpfcc)", lambda c: c.bcc),
              ("kernel headers for bcc", lambda c: c.bcc_headers is not None), ("clsact", lambda c: c.clsact))

ENGINES: dict[str, EngineInfo] = {
    "ebpf": EngineInfo("ebpf", EBPF_FEATURES, "exact per packet (decisions in the kernel)", _BPF_NEEDS),
    "netem": EngineInfo("netem", NETEM_FEATURES,
                        ("kernel timers; measured only under QEMU TCG here: median +0.29 to +0.52 ms, p99 +6.2 to "
                         "+6.6 ms, the VM's own timer noise (bench/delay_engines.py --vm, 2026-11-27; bench/README.md)"),
                        _BPF_NEEDS + (("sch_netem", lambda c: c.netem), ("sch_prio", lambda c: c.prio))),
    "edt": EngineInfo("edt", EDT_FEATURES,
                      ("EDT in the classifier, held by sch_fq (hrtimers), no reordering; measured only under QEMU "
                       "TCG here: median +0.28 to +0.38 ms, p99 +4.2 to +11 ms (bench/delay_engines.py --vm, "
                       "2026-11-27; bench/README.md)"),
                      _BPF_NEEDS + (("sch_fq", lambda c: c.fq),)),
    "userspace": EngineInfo("userspace", USERSPACE_FEATURES,
                            "held in userspace (NFQUEUE): measured median +0.08 to +0.13 ms, p99 +0.33 to +0.50 ms "
                            "(+1.2 to +3.2 ms in an earlier run), never early, on a loaded 2-core host "
                            "(bench/delay_engines.py --engines userspace, 2026-12-06; bench/README.md)",
                            (("root", lambda c: c.root), ("NFQUEUE", lambda c: c.nfqueue),
                             ("nft (nftables)", lambda c: c.nft))),
}
PREFERENCE = ("ebpf", "netem", "edt", "userspace")


def _userspace_built() -> bool:
    try:
        from . import userspace  # noqa: F401
    except ImportError:
        return False
    return True


def engine_info(name: str) -> EngineInfo:
    info = ENGINES[name]
    if name == "userspace" and not _userspace_built():
        return EngineInfo(info.name, info.serves, info.precision, info.needs, built=False)
    return info


def choose_engine(fault: FaultSpec, caps: Capabilities, requested: str = "auto") -> tuple[str, str]:
    """(engine name, why). Raises Unsupported naming what is missing, before any change."""
    features = set(fault.features())
    if requested != "auto":
        if requested not in ENGINES:
            raise InvalidSpec(f"engine must be auto or one of {', '.join(ENGINES)}", text=requested, field="engine")
        info = engine_info(requested)
        unserved = sorted(features - info.serves)
        if unserved:
            raise Unsupported(f"engine {requested} does not serve {', '.join(unserved)}")
        missing = info.missing(caps)
        if missing:
            raise Unsupported(f"engine {requested} is not available here: needs {', '.join(missing)}")
        return requested, "requested with --engine"
    reasons = []
    for name in PREFERENCE:
        info = engine_info(name)
        unserved = sorted(features - info.serves)
        missing = info.missing(caps)
        if not unserved and not missing:
            return name, f"auto: the most precise engine here that serves {', '.join(sorted(features))}"
        if not unserved:
            reasons.append(f"{name} needs {', '.join(missing)}")
    raise Unsupported(f"no engine here serves {', '.join(sorted(features))}: "
                      + ("; ".join(reasons) if reasons else "no engine combines these faults"))


def make_engine(name: str):
    if name == "ebpf":
        from .ebpf import EbpfEngine

        return EbpfEngine()
    if name == "netem":
        from .netem import NetemEngine

        return NetemEngine()
    if name == "edt":
        from .edt import EdtEngine

        return EdtEngine()
    if name == "userspace":
        from .userspace import UserspaceEngine

        return UserspaceEngine()
    raise Unsupported(f"engine {name} is not built yet")


def doctor_report(caps: Capabilities) -> str:
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    lines = [f"kernel {caps.kernel}",
             f"  root {yes(caps.root)}   bcc {yes(caps.bcc)}   bcc headers {caps.bcc_headers or 'NONE (sudo make setup)'}"
             f"   BTF {yes(caps.btf)}",
             f"  clsact {yes(caps.clsact)}   cls_bpf {yes(caps.clsact and caps.bcc)}   sch_netem {yes(caps.netem)}"
             f"   sch_fq {yes(caps.fq)}   sch_prio {yes(caps.prio)}   ifb {yes(caps.ifb)}   NFQUEUE "
             f"{yes(caps.nfqueue)}   nft {yes(caps.nft)}",
             "engines:"]
    for name in PREFERENCE:
        info = engine_info(name)
        missing = info.missing(caps)
        state = "available" if not missing else f"unavailable: needs {', '.join(missing)}"
        lines.append(f"  {name:10s} {state}")
        lines.append(f"  {'':10s} serves {', '.join(sorted(info.serves))}; precision: {info.precision}")
    lines.append("fault -> engine (--engine auto):")
    examples = {"loss": FaultSpec(loss_ratio=0.1), "partition": FaultSpec(partition=True),
                "corrupt": FaultSpec(corrupt_ratio=0.1), "duplicate": FaultSpec(duplicate_ratio=0.1),
                "delay": FaultSpec(delay_ns=1), "delay+jitter": FaultSpec(delay_ns=2, jitter_ns=1),
                "delay+loss": FaultSpec(delay_ns=1, loss_ratio=0.1), "rate": FaultSpec(rate_bps=8000)}
    for label, fault in examples.items():
        try:
            name, _ = choose_engine(fault, caps)
        except Unsupported as exc:
            name = f"none ({exc})"
        lines.append(f"  {label:13s} {name}")
    return "\n".join(lines)
