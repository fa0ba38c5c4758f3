"""The lab's spec, what a running lab offers, and its state file.

``LabSpec`` names the lab (prefix, subnet, state directory); ``LabInfo`` is what ``lab up`` returns and records;
``StateFile`` is ``state.json`` in the state directory: the spec, every object made, in order, written before
the object is made (so ``lab down`` undoes exactly that list, last first), and the LabInfo once the lab is up.
``locked`` serialises lab operations on one state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import crashpoints
from ..errors import ChaosInjectError, InvalidSpec
from ..files import write_json_atomic
from ..procfs import process_alive
from . import definition as labdef

DEFAULT_STATE_DIR = Path("/run/chaos-inject/lab")
INVENTORY_NAME = "inventory.toml"
LAB_IFNAME = "lab0"                    # the lab interface inside every role namespace
BRIDGE = "br0"
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,8}$")


class LabError(ChaosInjectError, RuntimeError):
    """The lab could not be brought up (what was made has been removed) or is in a state we do not own."""


@dataclass(frozen=True)
class LabSpec:
    """What lab to build: names, subnet and where its state lives (defaults: the one lab of this machine)."""

    prefix: str = "cilab"
    subnet: str = "10.213.0.0/24"
    state_dir: Path = DEFAULT_STATE_DIR
    db_timeout_s: float | None = None       # api's client-side database deadline (default: lab.json, 1 s)
    load_rate_per_s: float | None = None    # load generator's request rate (default: lab.json, 50/s)

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.prefix):
            raise InvalidSpec("lab prefix: 2-9 lowercase letters/digits, starting with a letter",
                              text=self.prefix, field="lab --prefix")
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError:
            raise InvalidSpec("not an IPv4 network", text=self.subnet, field="lab --subnet") from None
        if net.version != 4 or net.prefixlen > 26 or not net.is_private:
            raise InvalidSpec("lab subnet must be a private IPv4 network of at least /26", text=self.subnet,
                              field="lab --subnet")
        for name, value in (("db_timeout_s", self.db_timeout_s), ("load_rate_per_s", self.load_rate_per_s)):
            if value is not None and not value > 0:
                raise InvalidSpec("must be positive", text=str(value), field=name)
        object.__setattr__(self, "state_dir", Path(self.state_dir))

    def netns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def bridge_netns(self) -> str:
        return f"{self.prefix}-net"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}-host"


@dataclass
class LabInfo:
    """What a running lab offers: addresses, URLs, the inventory and the request log (for runners)."""

    prefix: str
    subnet: str
    state_dir: str
    host_address: str
    addresses: dict[str, str]
    netns: dict[str, str]
    interface: str
    ports: dict[str, list[int]]
    api_url: str
    prometheus_url: str
    inventory_path: str
    request_log: str
    db_timeout_s: float
    load_rate_per_s: float
    processes: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)   # lab up, per stage (for bench/lab_startup.py)
    capacity_per_s: float | None = None   # the api's /items throughput measured at lab up (None: not measured)
    rate_note: str = ""                   # how the load's rate was chosen

    def load_text(self) -> str:
        return f"{self.load_rate_per_s:g} requests/s" + (f" ({self.rate_note})" if self.rate_note else "")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LabStatus:
    up: bool
    info: LabInfo | None
    problems: list[str]

    def to_dict(self) -> dict:
        return {"up": self.up, "problems": self.problems, "lab": self.info.to_dict() if self.info else None}


class StateFile:
    """state.json: the spec, what was made in order (write-ahead), and the LabInfo once the lab is up."""

    def __init__(self, spec: LabSpec) -> None:
        self.path = spec.state_dir / "state.json"
        self.data: dict = {"version": 1, "spec": {"prefix": spec.prefix, "subnet": spec.subnet},
                           "made": [], "info": None}

    def load(self) -> bool:
        try:
            self.data = json.loads(self.path.read_text())
            return True
        except FileNotFoundError:
            return False

    def add(self, entry: dict) -> None:
        self.data["made"].append(entry)
        self.save()

    def save(self) -> None:
        with crashpoints.step("write lab state"):
            write_json_atomic(self.path, self.data, dir_mode=0o755)


@contextlib.contextmanager
def locked(state_dir: Path):
    """One lab operation at a time per state directory (flock on the directory itself: no lock file left)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # the postgres user walks through it to its data directory
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def recorded_alive(entry: dict) -> bool:
    """The process this entry recorded still runs (never a later process given the same pid)."""
    return entry.get("starttime") is not None and process_alive(entry["pid"], entry["starttime"])


def lab_info(spec: LabSpec, processes: dict[str, int]) -> LabInfo:
    """The LabInfo of ``spec``'s lab: addresses, ports and URLs from lab.json and the subnet."""
    d = labdef.load_definition()
    addrs = labdef.netns_addresses(spec.subnet, d)
    return LabInfo(
        prefix=spec.prefix, subnet=spec.subnet, state_dir=str(spec.state_dir),
        host_address=labdef.host_address(spec.subnet, d), addresses=dict(addrs.by_role),
        netns={r: spec.netns(r) for r in labdef.ROLES}, interface=LAB_IFNAME,
        ports={r: list(h["ports"]) for r, h in d["hosts"].items()},
        api_url=f"http://{addrs['api']}:{labdef.port('api', d)}",
        prometheus_url=f"http://{addrs['prometheus']}:{labdef.port('prometheus', d)}",
        inventory_path=str(spec.state_dir / INVENTORY_NAME), request_log=str(spec.state_dir / "requests.bin"),
        db_timeout_s=float(spec.db_timeout_s or d["api"]["db_timeout_s"]),
        load_rate_per_s=float(spec.load_rate_per_s or d["load"]["rate_per_s"]), processes=processes)
