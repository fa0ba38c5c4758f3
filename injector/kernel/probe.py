"""What this kernel and host can do, found by trying it in a throwaway namespace that is removed at once.

Unsupported features become answers here (and skips or clear errors elsewhere), never surprises mid-run.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..spec.fault import FaultSpec
from . import rawnl
from .headers import find_kernel_headers
from .netem import netem_attrs, prio_attrs
from .netns import create_namespace
from .owner import KernelOwner
from .rtnl import NetlinkError, open_rtnl


@dataclass(frozen=True)
class Capabilities:
    kernel: str
    root: bool
    bcc: bool
    bcc_headers: str | None
    btf: bool
    clsact: bool
    netem: bool
    fq: bool
    prio: bool
    ifb: bool
    nfqueue: bool
    nft: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _try_root_qdisc(netns: str, index: int, attrs: bytes) -> bool:
    """Create and delete a root qdisc in the throwaway namespace: the only reliable test that the kind exists."""
    with rawnl.rtnl(netns) as sock:
        try:
            sock.add_qdisc(index, rawnl.TC_H_ROOT, 0x10000, attrs)
        except OSError:
            return False
        sock.delete_qdisc(index, rawnl.TC_H_ROOT, 0x10000)
    return True


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    root = os.geteuid() == 0
    # found, not imported: loading libbcc costs ~0.1-0.2 s, and a warm program cache never needs it
    has_bcc = importlib.util.find_spec("bcc") is not None
    headers = find_kernel_headers()
    results = {"clsact": False, "netem": False, "fq": False, "prio": False, "ifb": False}
    if root:
        tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        name = f"ci-probe-{tag}"
        # ledgered before it is made (a run ledger of kind "probe"): a kill -9 at any point leaves something
        # `chaos-inject sweep` removes (issue #18: a killed probe left its namespace behind)
        with KernelOwner(f"probe-{tag}", meta={"kind": "probe", "netns": name}) as owner:
            owner.create({"kind": "netns", "name": name}, lambda: create_namespace(name))
            with open_rtnl(name) as rtnl:
                lo = rtnl.link_lookup(ifname="lo")[0]
                rtnl.link("set", index=lo, state="up")
                results["netem"] = _try_root_qdisc(name, lo, netem_attrs(FaultSpec(delay_ns=1_000_000)))
                results["fq"] = _try_root_qdisc(name, lo, rawnl.nla(rawnl.TCA_KIND, b"fq\0"))
                results["prio"] = _try_root_qdisc(name, lo, prio_attrs(4))
                try:
                    rtnl.tc("add", "clsact", lo)
                    rtnl.tc("del", "clsact", lo)
                    results["clsact"] = True
                except NetlinkError:
                    pass
                try:
                    rtnl.link("add", ifname="ciprobe0", kind="ifb")
                    rtnl.link("del", index=rtnl.link_lookup(ifname="ciprobe0")[0])
                    results["ifb"] = True
                except NetlinkError:
                    pass
    return Capabilities(
        kernel=platform.release(), root=root, bcc=has_bcc, bcc_headers=str(headers) if headers else None,
        btf=Path("/sys/kernel/btf/vmlinux").exists(),
        nfqueue=Path("/proc/net/netfilter").exists() or Path("/sys/module/nfnetlink_queue").exists(),
        nft=shutil.which("nft") is not None, **results)
