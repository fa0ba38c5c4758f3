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

This module is the up/down orchestration; its rooms: ``state`` (LabSpec, LabInfo, state.json, the lock),
``preflight`` (checks before anything is made, kernel modules, free subnets), ``services`` (the service
processes: start, wait until they serve, stop), ``capacity`` (the api's capacity and the load's rate); HTTP and
Prometheus through ``chaosinject.httpclient``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from .. import crashpoints
from ..errors import CleanupFailed, InvalidSpec, NotPermitted
from ..httpclient import get_ok, prometheus_query
from ..procfs import process_alive
from . import definition as labdef
from .capacity import LOAD_FRACTION, load_rate, measure_capacity   # the last two: vagrant/provision/load.sh too
from .preflight import link_add, preflight
from .services import log_tail, serves, start_service, stop_process, wait_ready
from .state import (BRIDGE, LAB_IFNAME, LabError, LabInfo, LabSpec, LabStatus, StateFile, lab_info, locked,
                    recorded_alive)

DB_INIT = Path(__file__).resolve().parent / "db-init.sh"   # package data; the Vagrant db VM runs it too


def _build(state: StateFile, spec: LabSpec) -> LabInfo:
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
        link_add(net, "bridge", ifname=BRIDGE)
        net.link("set", index=net.link_lookup(ifname=BRIDGE)[0], state="up")
    state.add({"kind": "link", "name": spec.host_link})
    with open_rtnl() as host:
        with crashpoints.step("create host veth"):
            link_add(host, "veth", ifname=spec.host_link, peer={"ifname": "host", "net_ns_fd": spec.bridge_netns})
        index = host.link_lookup(ifname=spec.host_link)[0]
        host.addr("add", index=index, address=labdef.host_address(spec.subnet, d), prefixlen=prefixlen)
        host.link("set", index=index, state="up")
    for role in labdef.ROLES:
        with open_rtnl(spec.netns(role)) as rns:
            with crashpoints.step("create veth"):
                link_add(rns, "veth", ifname=LAB_IFNAME, peer={"ifname": role, "net_ns_fd": spec.bridge_netns})
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
    info = lab_info(spec, {})

    # Prometheus first: it takes its targets in only after its discovery manager's first ~5 s tick, which
    # then overlaps with the database's initdb instead of adding to it
    pids = {}
    pids["prometheus"] = start_service(state, spec, "prometheus", wait=False)
    stage("prometheus_start")
    # db: the provisioning script initialises the cluster, we run the postmaster in its namespace
    with crashpoints.step("init database"):
        result = subprocess.run(["bash", str(DB_INIT), str(db_dir), str(conf / "db")], capture_output=True,
                                text=True)
    if result.returncode != 0:
        raise LabError(f"db-init.sh failed: {result.stderr.strip() or result.stdout.strip()}")
    stage("db_init")
    pids["db"] = start_service(state, spec, "db")
    stage("db_start")
    pids["api"] = start_service(state, spec, "api")
    if not get_ok(f"{info.api_url}/items", timeout_s=5):
        raise LabError(f"api answers /health but /items fails: database not usable\n{log_tail(spec, 'api')}")
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
    pids["load"] = start_service(state, spec, "load")
    stage("load_start")
    wait_ready(spec, "prometheus", pids["prometheus"], lambda: get_ok(f"{info.prometheus_url}/-/ready"))
    # a lab is up when Prometheus has scraped the api once: the seed's queries have data from here on
    wait_ready(spec, "prometheus", pids["prometheus"], lambda: any(
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
    if not (spec.state_dir / "state.json").exists():
        # no lab recorded: this call builds one, under the lab's ledger from before its state directory exists
        with lab_ledger(spec):
            return _up_unless_up(spec, repair)
    return _up_unless_up(spec, repair)


def _up_unless_up(spec: LabSpec, repair: bool) -> LabInfo:
    created_dir = not spec.state_dir.exists()
    with locked(spec.state_dir):
        state = StateFile(spec)
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
            with lab_ledger(spec):   # a broken lab, taken down to be built again: sweep finishes a killed repair
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
        preflight(spec)
    except BaseException:
        if created_dir:
            with contextlib.suppress(OSError):
                spec.state_dir.rmdir()  # nothing was made: leave no empty directory either
        raise
    state = StateFile(spec)
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


# -- the lab as one ledgered object --------------------------------------------------------------------------

@contextlib.contextmanager
def lab_ledger(spec: LabSpec):
    """A run ledger (kind ``lab``) naming this lab while the block runs: `lab up` building it, `lab down` removing
    it, a demo holding the lab it brought up. If the process dies in the block, `chaos-inject sweep` takes the lab
    down (kernel/labobjects.py: `lab down` of it). A lab a finished `lab up` leaves is the operator's: no ledger."""
    from ..kernel.ledger import Ledger
    from ..kernel.netns import unique_name

    ledger = Ledger(unique_name("lab"), meta={"kind": "lab", "lab": spec.prefix},
                    entries=[{"kind": "netns-lab", "prefix": spec.prefix, "subnet": spec.subnet,
                              "state_dir": str(spec.state_dir)}])
    ledger.save()
    try:
        yield
    finally:
        ledger.delete()


def _forget_dead_lab_ledgers(spec: LabSpec) -> None:
    """After `lab down`: the ledgers of dead commands that held this lab name nothing left (sweep would only run
    `lab down` again)."""
    from ..kernel.ledger import Ledger

    for ledger in Ledger.all():
        if ledger.meta.get("kind") == "lab" and not ledger.owner_alive and all(
                e.get("kind") == "netns-lab" and e.get("state_dir") == str(spec.state_dir) for e in ledger.entries):
            ledger.delete()


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
    with locked(spec.state_dir):
        state = StateFile(spec)
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
            with crashpoints.step("stop lab process"):
                stop_process(entry)    # usually dead already (a pod-kill); never a reused PID (start time)
            state.data["made"].remove(entry)
        state.save()
        pid = start_service(state, spec, role, wait=False)
        info = LabInfo(**state.data["info"])
        info.processes[role] = pid
        state.data["info"] = info.to_dict()
        state.save()
        wait_ready(spec, role, pid, serves(spec, role), timeout_s=timeout_s)
    return info


# -- down ---------------------------------------------------------------------------------------------------

def _teardown(spec: LabSpec, state: StateFile) -> None:
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
        stop_process(entry)
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
    with lab_ledger(spec), locked(spec.state_dir):   # killed half-way: sweep runs `lab down` again
        state = StateFile(spec)
        if not state.load():
            return False
        _teardown(spec, state)
    _forget_dead_lab_ledgers(spec)
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
    with contextlib.ExitStack() as stack:
        if not (was_up or keep):
            stack.enter_context(lab_ledger(spec))   # a kill in the block: sweep takes the lab down
        info = lab_up(spec)
        try:
            yield info
        finally:
            if not (was_up or keep):
                lab_down(spec)


# -- status -------------------------------------------------------------------------------------------------

def _status_of(spec: LabSpec, state: StateFile) -> LabStatus:
    from ..kernel.netns import existing_namespaces

    problems = []
    info_d = state.data.get("info")
    if not info_d:
        problems.append("lab up did not finish")
    present = set(existing_namespaces())
    for entry in state.data["made"]:
        if entry["kind"] == "netns" and entry["name"] not in present:
            problems.append(f"namespace {entry['name']} is gone")
        if entry["kind"] == "process" and (entry.get("pid") is None or not recorded_alive(entry)):
            problems.append(f"{entry['role']} (pid {entry['pid']}) is not running")
    if info_d and (state.data["spec"]["prefix"], state.data["spec"]["subnet"]) != (spec.prefix, spec.subnet):
        problems.append(f"the lab in {spec.state_dir} was built with prefix {state.data['spec']['prefix']} and "
                        f"subnet {state.data['spec']['subnet']}")
    info = LabInfo(**info_d) if info_d else None
    if info and not problems:
        try:
            if not get_ok(f"{info.api_url}/health", timeout_s=2.0):
                problems.append("api does not answer /health with 200")
        except OSError as exc:
            problems.append(f"api does not answer /health ({exc})")
    return LabStatus(up=not problems, info=info, problems=problems)


def lab_status(spec: LabSpec | None = None) -> LabStatus:
    spec = spec or LabSpec()
    state = StateFile(spec)
    if not state.load():
        return LabStatus(up=False, info=None, problems=["no lab is up"])
    return _status_of(spec, state)
