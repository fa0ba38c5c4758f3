"""The netns lab: `chaos-inject lab up|down|status` and ``lab_up()/lab_down()/lab_status()``.

Layout (names from the prefix, addresses from ``lab.json``; default prefix ``cilab``, subnet 10.213.0.0/24)::

    root ns: <prefix>-host 10.213.0.1/24 ──veth──┐
    <prefix>-net:  bridge br0 ── host, api, db, prometheus, load (veth peers)
    <prefix>-api:  lab0 10.213.0.10  api service :8080 (python3 -m chaosinject.lab.api)
    <prefix>-db:   lab0 10.213.0.11  PostgreSQL :5432 (own cluster, initdb by chaosinject/lab/db-init.sh)
    <prefix>-prometheus: lab0 .12    Prometheus :9090 (own config and storage)
    <prefix>-load: lab0 10.213.0.13  load generator -> api /items, request log

The bridge sits in a namespace of its own, so the host's firewall (br_netfilter) never sees lab traffic; the
lab namespaces have only their connected /24: no default route, no way to the uplink. The root namespace gets
one address on the bridge to reach the api and Prometheus. Every object is written to ``state.json`` before it
is created (processes right after, with their start time, so a reused PID is never killed); ``lab down``
undoes exactly that list, last first. Everything else the lab writes lives under the state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from .. import crashpoints
from ..errors import ChaosInjectError, CleanupFailed, InvalidSpec, NotPermitted, Unsupported
from ..files import write_json_atomic
from ..procfs import process_alive, process_start_ticks
from . import definition as labdef

DEFAULT_STATE_DIR = Path("/run/chaos-inject/lab")
INVENTORY_NAME = "inventory.toml"
LAB_IFNAME = "lab0"                    # the lab interface inside every role namespace
BRIDGE = "br0"
DB_INIT = Path(__file__).resolve().parent / "db-init.sh"   # package data; the Vagrant db VM runs it too
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,8}$")
# kernel modules the lab's links need (a stock distribution kernel builds them as modules, not always loaded)
LAB_MODULES = ("bridge", "veth")


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


# -- state --------------------------------------------------------------------------------------------------

class _State:
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
def _locked(state_dir: Path):
    """One lab operation at a time per state directory (flock on the directory itself: no lock file left)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # the postgres user walks through it to its data directory
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _alive(entry: dict) -> bool:
    """The process this entry recorded still runs (never a later process given the same pid)."""
    return entry.get("starttime") is not None and process_alive(entry["pid"], entry["starttime"])


# -- checks before anything is made ------------------------------------------------------------------------

def ensure_modules(modules: Iterable[str] = LAB_MODULES, *, sys_module: Path = Path("/sys/module"),
                   modules_dir: Path | None = None, modprobe: str = "modprobe") -> list[str]:
    """Load the kernel modules the lab needs (``bridge``, ``veth``) unless they are loaded or built in; returns
    the ones loaded here. A module this kernel has as a module but cannot load raises Unsupported naming it,
    before anything is made. Without a modules directory (a kernel with no loadable modules) nothing can be
    loaded and the links are tried as they are (a missing kind then fails with the error of ``_link_add``)."""
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


def _link_add(ipr, kind: str, **kw) -> None:
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


def _preflight(spec: LabSpec) -> None:
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


# -- up -----------------------------------------------------------------------------------------------------

_children: dict[int, subprocess.Popen] = {}  # started by this process: reaped by lab_down in the same process


def _info(spec: LabSpec, processes: dict[str, int]) -> LabInfo:
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


TAG_ENV = "CHAOS_INJECT_LAB_TAG"


def _spawn(state: _State, spec: LabSpec, role: str, argv: list[str], *, stop_signal: int = signal.SIGTERM) -> int:
    logs = spec.state_dir / "logs"
    logs.mkdir(exist_ok=True)
    # write-ahead: the entry (with a tag the process carries in its environment) exists before the process, so a
    # `lab up` killed between fork and recording the PID still leaves a process `lab down` can find
    tag = f"{spec.prefix}-{role}-{os.urandom(6).hex()}"
    entry = {"kind": "process", "role": role, "tag": tag, "pid": None, "starttime": None, "signal": int(stop_signal)}
    state.add(entry)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", TAG_ENV: tag}   # sys.executable finds the installed chaosinject
    with open(logs / f"{role}.log", "ab") as log, crashpoints.step("start lab process"):
        proc = subprocess.Popen(["ip", "netns", "exec", spec.netns(role), *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=spec.state_dir, env=env,
                                start_new_session=True)  # its own process group: down ends its children too
    _children[proc.pid] = proc
    start = None
    for _ in range(100):  # /proc entry appears with the fork; the start time never changes after
        start = process_start_ticks(proc.pid)
        if start is not None or proc.poll() is not None:
            break
        time.sleep(0.001)
    entry.update(pid=proc.pid, starttime=start)
    state.save()
    return proc.pid


def _tagged_processes(tag: str) -> list[dict]:
    """Processes whose environment carries ``tag`` (for an entry recorded before its PID was)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            start = process_start_ticks(int(d.name))
            if start is not None and process_alive(int(d.name), start):
                found.append({"pid": int(d.name), "starttime": start})
    return found


def _log_tail(spec: LabSpec, role: str, lines: int = 15) -> str:
    try:
        return "\n".join((spec.state_dir / "logs" / f"{role}.log").read_text().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _wait_ready(spec: LabSpec, role: str, pid: int, check, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        proc = _children.get(pid)
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{role} exited with status {proc.returncode} while starting:\n{_log_tail(spec, role)}")
        try:
            if check():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise LabError(f"{role} not ready after {timeout_s:g} s ({last}):\n{_log_tail(spec, role)}")


def _http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


@dataclass(frozen=True)
class HttpReply:
    """One GET of a lab service: ``status`` is None when no HTTP answer came (refused, reset, timed out; ``error``
    says which); ``elapsed_s`` runs to the whole body."""

    status: int | None
    elapsed_s: float
    body: bytes = b""
    error: str | None = None


def http_get(url: str, timeout_s: float = 5.0) -> HttpReply:
    """GET ``url``; an HTTP error status is a reply like any other (a 503 is what a database fault gives)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read()
            return HttpReply(resp.status, time.monotonic() - start, body)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return HttpReply(exc.code, time.monotonic() - start, body)
    except OSError as exc:
        return HttpReply(None, time.monotonic() - start, error=str(exc))


def _tcp_open(address: str, port: int) -> bool:
    with socket.create_connection((address, port), timeout=0.5):
        return True


def prometheus_query(prometheus_url: str, query: str, timeout_s: float = 3.0) -> list[dict]:
    """Run an instant PromQL query; returns the ``result`` vector (empty: no data yet)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise LabError(f"prometheus query failed: {body}")
    return body["data"]["result"]


def _start_service(state: _State, spec: LabSpec, role: str, *, wait: bool = True) -> int:
    """Start one role's service in its namespace (recorded in state.json first) from the configs under the
    state directory; with ``wait``, return once it serves. `lab up` and `lab restart` both start them here."""
    d = labdef.load_definition()
    addrs = labdef.netns_addresses(spec.subnet, d)
    conf = spec.state_dir / "conf"
    if role == "db":
        argv = labdef.service_argv("db", addrs, conf_dir=conf / "db", data_dir=spec.state_dir / "db", definition=d)
        pid = _spawn(state, spec, "db", ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                                         "--", *argv], stop_signal=getattr(signal, labdef.STOP_SIGNAL["db"]))
    elif role == "prometheus":
        pid = _spawn(state, spec, role, labdef.service_argv(
            role, addrs, conf_dir=conf / role, data_dir=spec.state_dir / "prometheus-data", definition=d))
    else:
        pid = _spawn(state, spec, role, labdef.service_argv(role, addrs, conf_dir=conf / role, data_dir=conf,
                                                            python=sys.executable, definition=d))
    if wait:
        _wait_ready(spec, role, pid, _serves(spec, role))
    return pid


def _serves(spec: LabSpec, role: str):
    """A check that ``role``'s service is ready (db: accepts TCP, api: /health 200, Prometheus: /-/ready,
    load: its request log exists)."""
    info = _info(spec, {})
    if role == "db":
        return lambda: _tcp_open(info.addresses["db"], info.ports["db"][0])
    if role == "api":
        return lambda: _http_ok(f"{info.api_url}/health")
    if role == "prometheus":
        return lambda: _http_ok(f"{info.prometheus_url}/-/ready")
    return lambda: Path(info.request_log).exists()


LOAD_FRACTION = 0.4     # the load's share of the measured capacity: well below it, room for a fault's extra work
MIN_RATE_PER_S = 2.0


def measure_capacity(url: str, concurrency: int, *, min_s: float = 2.0, max_s: float = 16.0,
                     min_answers: int = 40, enough_per_s: float | None = None, windows: int = 3) -> float:
    """The api's throughput in 200 answers per second: ``concurrency`` closed-loop clients (the api's in-flight
    limit), counted in windows of at least ``min_s`` and ``min_answers`` answers (all of them within ``max_s``).
    Measured before the load generator starts, from this process (its HTTP client costs about what the load
    generator's does).

    One window when it already shows ``enough_per_s`` (the load then runs at the definition's rate: the common case
    on a host); else ``windows`` of them and their median counts. One window misreads: in a QEMU TCG guest the
    first seconds of new code run slower (its translation cache is cold) and a neighbour's burst on shared cores
    steals time (one 2 s window read 9.2/s where the next lab up read 36.8/s); the best of three over-read it
    once under a busy host (load 23/s at "40 %", and the api's /health then missed its 3 s)."""
    import threading

    if not http_get(url, 10).status == 200:        # warm: the first query opens a pooled connection
        raise LabError(f"api does not answer {url} with 200 before its capacity is measured")
    done = threading.Event()
    lock = threading.Lock()
    ok = [0]

    def client() -> None:
        while not done.is_set():
            if http_get(url, 5).status == 200:
                with lock:
                    ok[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, concurrency))]
    start = time.monotonic()
    for t in threads:
        t.start()
    rates: list[float] = []
    w_start, w_n = start, 0
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        with lock:
            n = ok[0]
        elapsed = now - w_start
        if (elapsed >= min_s and n - w_n >= min_answers) or now - start >= max_s:
            rates.append((n - w_n) / elapsed)
            if (enough_per_s is not None and rates[-1] >= enough_per_s) or len(rates) >= windows \
                    or now - start >= max_s:
                break
            w_start, w_n = now, n
    done.set()
    for t in threads:
        t.join(10)
    import statistics

    return statistics.median(rates)


def load_rate(capacity_per_s: float, default_per_s: float) -> tuple[float, str]:
    """The load's rate from the measured capacity: the definition's rate, lowered to LOAD_FRACTION of the
    capacity where that is less (whole requests per second, at least MIN_RATE_PER_S); and a note saying so."""
    cap = max(MIN_RATE_PER_S, float(int(capacity_per_s * LOAD_FRACTION)))
    if cap >= default_per_s:
        return default_per_s, (f"api capacity measured at lab up: {capacity_per_s:.0f}/s, the load "
                               f"{default_per_s / max(capacity_per_s, 1e-9):.0%} of it")
    return cap, (f"lowered from {default_per_s:g}/s: api capacity measured at lab up {capacity_per_s:.1f}/s, the load "
                 f"runs at {LOAD_FRACTION:.0%} of it")


def _build(state: _State, spec: LabSpec) -> LabInfo:
    from ..kernel.netns import Topology
    from ..kernel.rtnl import open_rtnl

    d = labdef.load_definition()
    addrs = labdef.netns_addresses(spec.subnet, d)
    prefixlen = addrs.prefixlen
    topo = Topology()
    timings: dict[str, float] = {}
    mark = [time.monotonic()]

    def stage(name: str) -> None:
        now = time.monotonic()
        timings[name] = round(now - mark[0], 4)
        mark[0] = now

    # namespaces: recorded first, then made
    for ns in (spec.bridge_netns, *(spec.netns(r) for r in labdef.ROLES)):
        state.add({"kind": "netns", "name": ns})
        with crashpoints.step("create netns"):
            topo.add_namespace(ns)
    with open_rtnl(spec.bridge_netns) as net, crashpoints.step("create bridge"):
        _link_add(net, "bridge", ifname=BRIDGE)
        net.link("set", index=net.link_lookup(ifname=BRIDGE)[0], state="up")
    state.add({"kind": "link", "name": spec.host_link})
    with open_rtnl() as host:
        with crashpoints.step("create host veth"):
            _link_add(host, "veth", ifname=spec.host_link, peer={"ifname": "host", "net_ns_fd": spec.bridge_netns})
        index = host.link_lookup(ifname=spec.host_link)[0]
        host.addr("add", index=index, address=labdef.host_address(spec.subnet, d), prefixlen=prefixlen)
        host.link("set", index=index, state="up")
    for role in labdef.ROLES:
        with open_rtnl(spec.netns(role)) as rns:
            with crashpoints.step("create veth"):
                _link_add(rns, "veth", ifname=LAB_IFNAME, peer={"ifname": role, "net_ns_fd": spec.bridge_netns})
            index = rns.link_lookup(ifname=LAB_IFNAME)[0]
            rns.addr("add", index=index, address=addrs[role], prefixlen=prefixlen)
            rns.link("set", index=index, state="up")
    with open_rtnl(spec.bridge_netns) as net:
        br = net.link_lookup(ifname=BRIDGE)[0]
        for peer in ("host", *labdef.ROLES):
            net.link("set", index=net.link_lookup(ifname=peer)[0], master=br, state="up")

    stage("network")
    # configs: the same generators the Vagrant provisioning runs
    conf = spec.state_dir / "conf"
    db_dir = spec.state_dir / "db"
    labdef.write_files(labdef.render_db(addrs, socket_dir=str(db_dir), definition=d), conf / "db")
    api_cfg = json.loads(labdef.render_api(addrs, d)["api.json"])
    if spec.db_timeout_s:
        api_cfg["db_timeout_s"] = spec.db_timeout_s
    labdef.write_files({"api.json": json.dumps(api_cfg, indent=2)}, conf / "api")
    labdef.write_files(labdef.render_prometheus(addrs, d), conf / "prometheus")
    info = _info(spec, {})

    # Prometheus first: it takes its targets in only after its discovery manager's first ~5 s tick, which
    # then overlaps with the database's initdb instead of adding to it
    pids = {}
    pids["prometheus"] = _start_service(state, spec, "prometheus", wait=False)
    stage("prometheus_start")
    # db: the provisioning script initialises the cluster, we run the postmaster in its namespace
    with crashpoints.step("init database"):
        result = subprocess.run(["bash", str(DB_INIT), str(db_dir), str(conf / "db")], capture_output=True,
                                text=True)
    if result.returncode != 0:
        raise LabError(f"db-init.sh failed: {result.stderr.strip() or result.stdout.strip()}")
    stage("db_init")
    pids["db"] = _start_service(state, spec, "db")
    stage("db_start")
    pids["api"] = _start_service(state, spec, "api")
    if not _http_ok(f"{info.api_url}/items", timeout_s=5):
        raise LabError(f"api answers /health but /items fails: database not usable\n{_log_tail(spec, 'api')}")
    stage("api_start")
    # the load runs well below what the api can serve here (a TCG VM serves a fraction of what this host does)
    info.capacity_per_s = measure_capacity(f"{info.api_url}/items", int(api_cfg.get("max_in_flight", 8)),
                                           enough_per_s=float(info.load_rate_per_s) / LOAD_FRACTION)
    stage("capacity")
    if spec.load_rate_per_s is None:
        info.load_rate_per_s, info.rate_note = load_rate(info.capacity_per_s, info.load_rate_per_s)
    else:
        info.rate_note = f"as asked; api capacity measured at lab up: {info.capacity_per_s:.0f}/s"
    load_cfg = json.loads(labdef.render_load(addrs, log_path=info.request_log, definition=d)["load.json"])
    load_cfg["rate_per_s"] = info.load_rate_per_s
    labdef.write_files({"load.json": json.dumps(load_cfg, indent=2)}, conf / "load")
    pids["load"] = _start_service(state, spec, "load")
    stage("load_start")
    _wait_ready(spec, "prometheus", pids["prometheus"], lambda: _http_ok(f"{info.prometheus_url}/-/ready"))
    # a lab is up when Prometheus has scraped the api once: the seed's queries have data from here on
    _wait_ready(spec, "prometheus", pids["prometheus"], lambda: any(
        r["value"][1] == "1" for r in prometheus_query(info.prometheus_url, 'up{job="api"}')))
    stage("first_scrape")

    netns = {r: spec.netns(r) for r in labdef.ROLES}
    inventory = Path(info.inventory_path)
    with crashpoints.step("write inventory"):
        inventory.write_text(labdef.render_inventory(addrs, netns=netns, interface=LAB_IFNAME, definition=d,
                                                     restart={r: restart_command(spec, r) for r in labdef.ROLES}))
    info.processes = pids
    info.timings_s = timings
    return info


def lab_up(spec: LabSpec | None = None, *, repair: bool = True) -> LabInfo:
    """Bring the lab up; a lab already up and healthy is returned as it is (idempotent).

    A recorded lab that is not healthy (a process died, a namespace vanished) is taken down and rebuilt when
    ``repair`` (else LabError). Objects with our names that no state records are refused, never removed.
    On any failure everything made so far is removed before the error is raised.
    """
    spec = spec or LabSpec()
    if os.geteuid() != 0:
        raise NotPermitted("the lab creates network namespaces: run as root")
    created_dir = not spec.state_dir.exists()
    with _locked(spec.state_dir):
        state = _State(spec)
        if state.load():
            status = _status_of(spec, state)
            if status.up:
                wanted = {"db_timeout_s": spec.db_timeout_s, "load_rate_per_s": spec.load_rate_per_s}
                differ = {k: v for k, v in wanted.items() if v is not None and v != getattr(status.info, k)}
                if differ:
                    running = {k: getattr(status.info, k) for k in differ}
                    raise LabError(f"a lab is already up with {running}, not {differ}: `chaos-inject lab down` first")
                return status.info
            if not repair:
                raise LabError(f"a lab recorded in {state.path} is not healthy ({'; '.join(status.problems)}): "
                               "run `chaos-inject lab down` first")
            _teardown(spec, state)  # removes the state directory too: build again under a fresh lock
        else:
            return _up_locked(spec, created_dir)
    return lab_up(spec, repair=False)


def _up_locked(spec: LabSpec, created_dir: bool) -> LabInfo:
    leftovers = [p.name for p in spec.state_dir.iterdir()]
    if leftovers:
        raise LabError(f"{spec.state_dir} holds files no lab state records ({', '.join(sorted(leftovers)[:5])}):"
                       " not ours to remove")
    try:
        _preflight(spec)
    except BaseException:
        if created_dir:
            with contextlib.suppress(OSError):
                spec.state_dir.rmdir()  # nothing was made: leave no empty directory either
        raise
    state = _State(spec)
    state.data["made"].append({"kind": "dir", "path": str(spec.state_dir)})
    state.save()
    try:
        info = _build(state, spec)
    except BaseException as exc:
        try:
            _teardown(spec, state)
        except CleanupFailed as cleanup:
            raise LabError(f"lab up failed ({exc}) and so did removing what it made: {cleanup}") from exc
        if isinstance(exc, (LabError, KeyboardInterrupt, SystemExit)):
            raise
        raise LabError(f"lab up failed, everything it made was removed: {exc}") from exc
    state.data["info"] = info.to_dict()
    state.save()
    return info


# -- restart ------------------------------------------------------------------------------------------------

def restart_command(spec: LabSpec, role: str) -> str:
    """The inventory's ``restart`` for a role: `chaos-inject lab restart ROLE` for this lab (run by a translated
    pod-kill in the role's namespace; it works from any namespace)."""
    import shlex

    return (f"exec {shlex.quote(sys.executable)} -m chaosinject.cli lab "
            f"restart {role} --prefix {spec.prefix} --subnet {spec.subnet} --state-dir "
            f"{shlex.quote(str(spec.state_dir))}")


def lab_restart(role: str, spec: LabSpec | None = None, *, timeout_s: float = 30.0) -> LabInfo:
    """Restart ``role``'s service under the lab's ownership (as Kubernetes brings a killed pod back): a process
    still running is stopped first, the new one is recorded in state.json (the old entry goes once its process
    is gone) and returned once it serves. The lab must have been brought up by `lab up`."""
    spec = spec or LabSpec()
    if role not in labdef.ROLES:
        raise InvalidSpec(f"a lab role is one of {', '.join(labdef.ROLES)}", text=role, field="lab restart ROLE")
    if os.geteuid() != 0:
        raise NotPermitted("the lab's processes run in its namespaces: run as root")
    if not (spec.state_dir / "state.json").exists():
        raise LabError(f"no lab is recorded in {spec.state_dir}: `chaos-inject lab up` first")
    with _locked(spec.state_dir):
        state = _State(spec)
        if not state.load() or not state.data.get("info"):
            raise LabError(f"the lab in {spec.state_dir} is not up (lab up did not finish)")
        built = (state.data["spec"]["prefix"], state.data["spec"]["subnet"])
        if built != (spec.prefix, spec.subnet):
            raise LabError(f"the lab in {spec.state_dir} was built with prefix {built[0]} and subnet {built[1]}")
        from ..kernel.netns import existing_namespaces

        if spec.netns(role) not in existing_namespaces():
            raise LabError(f"namespace {spec.netns(role)} is gone: `chaos-inject lab up` repairs the lab")
        old = [e for e in state.data["made"] if e["kind"] == "process" and e["role"] == role]
        for entry in old:
            _stop_process(entry)        # usually dead already (a pod-kill); never a reused PID (start time)
            state.data["made"].remove(entry)
        state.save()
        pid = _start_service(state, spec, role, wait=False)
        info = LabInfo(**state.data["info"])
        info.processes[role] = pid
        state.data["info"] = info.to_dict()
        state.save()
        _wait_ready(spec, role, pid, _serves(spec, role), timeout_s=timeout_s)
    return info


# -- down ---------------------------------------------------------------------------------------------------

def _stop_process(entry: dict, timeout_s: float = 10.0) -> None:
    if entry.get("pid") is None:  # recorded, then `lab up` died before the PID was: find it by its tag
        for found in _tagged_processes(entry.get("tag", "")):
            _stop_process({**entry, **found}, timeout_s)
        return
    pid = entry["pid"]
    if entry.get("starttime") is None or not _alive(entry):
        _reap(pid)
        return  # gone already (or a different process now has the PID: never ours to kill)
    os.kill(pid, entry.get("signal", signal.SIGTERM))
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and _alive(entry):
        _reap(pid)
        time.sleep(0.02)
    if _alive(entry):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    # whatever is left in its process group (e.g. PostgreSQL backends, worker threads' children) ends with it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and _alive(entry):
        _reap(pid)
        time.sleep(0.02)
    _reap(pid)


def _reap(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        if proc.poll() is None:
            _children[pid] = proc  # still running: keep it for the next look


def _teardown(spec: LabSpec, state: _State) -> None:
    """Undo state["made"], last first; every step is tried; failures raise CleanupFailed at the end."""
    from ..kernel.rtnl import NetlinkError

    failures = []
    for entry in reversed(state.data["made"]):
        try:
            kind = entry["kind"]
            with crashpoints.step(f"remove lab {kind}"):
                _undo_made(entry)
            state.data["made"].remove(entry)
            if kind != "dir":
                state.save()
        except (OSError, NetlinkError, RuntimeError) as exc:
            failures.append((entry, exc))
    if failures:
        with contextlib.suppress(OSError):
            state.save()
        raise CleanupFailed("lab down could not remove: " + "; ".join(f"{e} ({x})" for e, x in failures), failures)


def _undo_made(entry: dict) -> None:
    """Remove one object state["made"] records (one gone already: nothing to do)."""
    from ..kernel.netns import Topology
    from ..kernel.rtnl import open_rtnl

    kind = entry["kind"]
    if kind == "process":
        _stop_process(entry)
    elif kind == "link":
        with open_rtnl() as host:
            found = host.link_lookup(ifname=entry["name"])
            if found:
                host.link("del", index=found[0])
    elif kind == "netns":
        Topology(namespaces=[entry["name"]]).close()
    elif kind == "dir":
        path = Path(entry["path"])
        if path.exists():
            shutil.rmtree(path)


def lab_down(spec: LabSpec | None = None) -> bool:
    """Remove exactly what ``lab up`` recorded; False when there was no lab recorded."""
    spec = spec or LabSpec()
    if os.geteuid() != 0:
        raise NotPermitted("the lab's namespaces and processes belong to root: run as root")
    if not (spec.state_dir / "state.json").exists():
        # `lab up` killed between making the state directory and writing its first state: an empty directory
        with contextlib.suppress(OSError):
            spec.state_dir.rmdir()  # only if empty: a file in it is not ours to remove
        return False
    with _locked(spec.state_dir):
        state = _State(spec)
        if not state.load():
            return False
        _teardown(spec, state)
    return True


def lab_leftovers(spec: LabSpec, pids: Iterable[int] = ()) -> list[str]:
    """What of a lab is still there (for checks after ``lab down``): its namespaces, the host link, the state
    directory, and which of ``pids`` (its processes) still run. Empty: nothing is left."""
    from ..kernel.netns import existing_namespaces

    left = [ns for ns in existing_namespaces() if ns.startswith(spec.prefix + "-")]
    left += [spec.host_link] if Path(f"/sys/class/net/{spec.host_link}").exists() else []
    left += [str(spec.state_dir)] if spec.state_dir.exists() else []
    left += [f"pid {pid}" for pid in sorted(set(pids)) if process_alive(pid, None)]
    return left


@contextlib.contextmanager
def running_lab(spec: LabSpec | None = None, *, keep: bool = False):
    """``with running_lab() as info:`` the lab is up inside the block; taken down after it unless it was
    already up before (someone else's) or ``keep``."""
    spec = spec or LabSpec()
    was_up = lab_status(spec).up
    info = lab_up(spec)
    try:
        yield info
    finally:
        if not (was_up or keep):
            lab_down(spec)


# -- status -------------------------------------------------------------------------------------------------

def _status_of(spec: LabSpec, state: _State) -> LabStatus:
    from ..kernel.netns import existing_namespaces

    problems = []
    info_d = state.data.get("info")
    if not info_d:
        problems.append("lab up did not finish")
    present = set(existing_namespaces())
    for entry in state.data["made"]:
        if entry["kind"] == "netns" and entry["name"] not in present:
            problems.append(f"namespace {entry['name']} is gone")
        if entry["kind"] == "process" and (entry.get("pid") is None or not _alive(entry)):
            problems.append(f"{entry['role']} (pid {entry['pid']}) is not running")
    if info_d and (state.data["spec"]["prefix"], state.data["spec"]["subnet"]) != (spec.prefix, spec.subnet):
        problems.append(f"the lab in {spec.state_dir} was built with prefix {state.data['spec']['prefix']} and "
                        f"subnet {state.data['spec']['subnet']}")
    info = LabInfo(**info_d) if info_d else None
    if info and not problems:
        try:
            if not _http_ok(f"{info.api_url}/health", timeout_s=2.0):
                problems.append("api does not answer /health with 200")
        except OSError as exc:
            problems.append(f"api does not answer /health ({exc})")
    return LabStatus(up=not problems, info=info, problems=problems)


def lab_status(spec: LabSpec | None = None) -> LabStatus:
    spec = spec or LabSpec()
    state = _State(spec)
    if not state.load():
        return LabStatus(up=False, info=None, problems=["no lab is up"])
    return _status_of(spec, state)
