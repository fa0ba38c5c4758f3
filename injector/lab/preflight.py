"""Checks before `lab up` makes anything: root, the programs and modules the lab needs, names and a subnet that
are free; and the kernel's link kinds (``link_add`` names the module a failure most likely means)."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from ..errors import NotPermitted, Unsupported
from . import definition as labdef
from .state import LabError, LabSpec

# kernel modules the lab's links need (a stock distribution kernel builds them as modules, not always loaded)
LAB_MODULES = ("bridge", "veth")


def ensure_modules(modules: Iterable[str] = LAB_MODULES, *, sys_module: Path = Path("/sys/module"),
                   modules_dir: Path | None = None, modprobe: str = "modprobe") -> list[str]:
    """Load the kernel modules the lab needs (``bridge``, ``veth``) unless they are loaded or built in; returns
    the ones loaded here. A module this kernel has as a module but cannot load raises Unsupported naming it,
    before anything is made. Without a modules directory (a kernel with no loadable modules) nothing can be
    loaded and the links are tried as they are (a missing kind then fails with the error of ``link_add``)."""
    modules_dir = modules_dir or Path("/lib/modules") / os.uname().release
    try:
        builtin = {Path(line).name.split(".", 1)[0].replace("-", "_")
                   for line in (modules_dir / "modules.builtin").read_text().split()}
    except OSError:
        builtin = set()
    loaded, missing = [], []
    for mod in modules:
        if (sys_module / mod).exists() or mod in builtin or not modules_dir.is_dir():
            continue   # loaded, built in, or no module of this kernel can be loaded anyway
        tool = shutil.which(modprobe)
        res = subprocess.run([tool, mod], capture_output=True, text=True) if tool else None
        if res is not None and res.returncode == 0:
            loaded.append(mod)
        else:
            why = "no modprobe (apt-get install kmod)" if res is None else \
                (res.stderr.strip() or f"modprobe exited {res.returncode}")
            missing.append(f"{mod} ({why})")
    if missing:
        raise Unsupported(f"the lab needs the kernel module(s) {'; '.join(missing)}: install this kernel's "
                          f"modules ({os.uname().release}; Debian: the linux-image package ships them) or load "
                          "them with modprobe")
    return loaded


def link_add(ipr, kind: str, **kw) -> None:
    """``link add`` naming the kernel module a failure most likely means (EOPNOTSUPP: the kind is unknown)."""
    import errno

    from ..kernel.rtnl import NetlinkError

    try:
        ipr.link("add", kind=kind, **kw)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            raise LabError(f"this kernel cannot make a {kind} link (Operation not supported): the {kind} module is "
                           f"not loaded or not built (`modprobe {kind}`)") from exc
        raise


def preflight(spec: LabSpec) -> None:
    if os.geteuid() != 0:
        raise NotPermitted("the lab creates network namespaces and runs PostgreSQL as user postgres: run as root")
    missing = []
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("PostgreSQL server (apt-get install postgresql)")
    if not shutil.which("prometheus"):
        missing.append("prometheus (apt-get install prometheus)")
    for tool in ("ip", "setpriv"):
        if not shutil.which(tool):
            missing.append(tool)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("python3-psycopg (the api's database driver)")
    if missing:
        raise Unsupported("the lab needs: " + "; ".join(missing) + " — run `sudo make setup`")
    ensure_modules()
    from ..kernel.netns import existing_namespaces

    ours = {spec.netns(r) for r in labdef.ROLES} | {spec.bridge_netns}
    clash = sorted(ours & set(existing_namespaces()))
    if clash:
        raise LabError(f"network namespaces {', '.join(clash)} exist but no lab state records them "
                       f"(under {spec.state_dir}): not ours to remove; delete them (`ip netns del NAME`) or use "
                       f"another --prefix")
    if Path(f"/sys/class/net/{spec.host_link}").exists():
        raise LabError(f"interface {spec.host_link} exists but no lab state records it: not ours to remove")
    reach = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "test", "-x",
                            str(spec.state_dir)], capture_output=True)
    if reach.returncode != 0:
        raise LabError(f"user postgres cannot reach {spec.state_dir} (a parent directory is not world-searchable): "
                       "choose another state directory")
    net = ipaddress.ip_network(spec.subnet)
    for other, dst, dev in routed_networks():
        if other.overlaps(net):
            raise LabError(f"lab subnet {spec.subnet} overlaps a route of this machine ({dst} dev {dev}): "
                           "choose another with --subnet")


def routed_networks() -> list[tuple[ipaddress.IPv4Network, str, str]]:
    """(network, route destination, device) of this machine's IPv4 routes, in every table (default excluded)."""
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    nets = []
    for route in json.loads(out.stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("local", "broadcast"):
            continue
        try:
            nets.append((ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False), dst,
                         route.get("dev", "?")))
        except ValueError:
            continue
    return nets


def free_subnet(first_two: str) -> str:
    """A /24 under ``first_two`` (e.g. "10.214") that no route of this machine overlaps: for test and bench labs
    beside the default one."""
    used = [net for net, _, _ in routed_networks()]
    for third in random.sample(range(100, 251), 151):
        net = ipaddress.ip_network(f"{first_two}.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise LabError(f"no free {first_two}.x.0/24 for a lab")
