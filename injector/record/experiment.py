"""One-way and RTT samples in an experiment: the ``record`` key of the chaos-inject extension block.

    "extensions": [{"name": "chaos-inject",
                    "record": {"oneway": ["db->api"],      # packets SRC->DST: one-way latency
                               "rtt": ["api->db"],         # TCP connections SRC->DST (SRC connects): RTT
                               "placement": "socket",      # one-way arrival: tc (default) or socket
                               "cgroup": "/sys/fs/cgroup", # sockets counted (rtt; one-way at socket placement)
                               "baseline": "2s"}}]         # recorded before the hypothesis and the method

Flows are resolved as the fault actions resolve theirs (inventory names, ``parse_flow``; the interface a
packet leaves by from the inventory, else a route lookup). One-way samples are stamped as the packets leave
SRC's interface and matched at DST's interface (``tc``) or at the receiving sockets of ``cgroup``
(``socket``: also sees holds in the receiver's netfilter, e.g. the userspace engine's ingress delay). RTT
samples come from the TCP connections SRC makes while recording (sock_ops on ``cgroup``). ``cgroup`` defaults
to the root of the cgroup v2 hierarchy (e.g. /sys/fs/cgroup/unified on a hybrid layout): every socket of the
host, filtered by the flows.

The runner starts these recorders before its baseline phase, they follow its phases, and they are written
into the run directory next to the request samples (``samples/oneway-*.parquet``, ``samples/rtt-*.parquet``);
the summary (journal ``chaos-inject.recorders.record``) carries the measured shift per flow and source.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ExperimentInvalid
from ..extension import EXTENSION_NAME

log = logging.getLogger("chaos_inject.experiment")

RECORD_KEYS = ("oneway", "rtt", "placement", "cgroup", "baseline")
PLACEMENTS = ("tc", "socket")
DEFAULT_BASELINE_S = 2.0


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """The validated ``record`` block; ``path`` is its field path, e.g. ``extensions[0].record``."""

    path: str
    oneway: tuple[str, ...] = ()
    rtt: tuple[str, ...] = ()
    placement: str = "tc"
    cgroup: str | None = None
    baseline_s: float = DEFAULT_BASELINE_S

    def describe(self) -> str:
        """One line for --dry-run."""
        parts = []
        if self.oneway:
            parts.append(f"one-way {', '.join(self.oneway)} (at the receiver's "
                         f"{'interface' if self.placement == 'tc' else 'sockets'})")
        if self.rtt:
            parts.append(f"RTT {', '.join(self.rtt)}")
        where = f"; cgroup {self.cgroup}" if self.cgroup else ""
        return f"recorded samples: {'; '.join(parts)}; baseline {self.baseline_s:g}s{where} ({self.path})"


def record_errors(extensions: Any) -> tuple[RecordSpec | None, list[tuple[str, str]]]:
    """The ``record`` block of the chaos-inject extension, validated without touching the machine:
    (spec or None, [(field path, problem), ...])."""
    errors: list[tuple[str, str]] = []
    found = None
    for i, ext in enumerate(extensions or ()):
        if isinstance(ext, Mapping) and ext.get("name") == EXTENSION_NAME and "record" in ext:
            found = (f"extensions[{i}].record", ext["record"])
    if found is None:
        return None, errors
    path, block = found
    if not isinstance(block, Mapping):
        return None, [(path, "must be a mapping with oneway and/or rtt (lists of flows such as 'api->db')")]
    for key in block:
        if key not in RECORD_KEYS:
            errors.append((f"{path}.{key}", f"unknown key; expected some of {', '.join(RECORD_KEYS)}"))
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("oneway", "rtt"):
        value = block.get(key, ())
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            errors.append((f"{path}.{key}", "must be a list of flows such as 'api->db'"))
            value = ()
        good = []
        for j, text in enumerate(value):
            if not isinstance(text, str) or "->" not in text:
                errors.append((f"{path}.{key}[{j}]", f"must be a flow SRC->DST such as 'api->db', got {text!r}"))
            else:
                good.append(text.strip())
        lists[key] = tuple(good)
    if not block.get("oneway") and not block.get("rtt"):
        errors.append((path, "names nothing to record: give oneway and/or rtt flows"))
    placement = block.get("placement", "tc")
    if placement not in PLACEMENTS:
        errors.append((f"{path}.placement", f"must be tc (the receiver's interface) or socket (the receiving "
                                            f"sockets of cgroup), got {placement!r}"))
        placement = "tc"
    cgroup = block.get("cgroup")
    if cgroup is not None and not (isinstance(cgroup, str) and cgroup.startswith("/")):
        errors.append((f"{path}.cgroup", f"must be an absolute path of a cgroup v2 directory, got {cgroup!r}"))
        cgroup = None
    baseline_s = DEFAULT_BASELINE_S
    if "baseline" in block:
        from ..errors import InvalidSpec
        from ..spec.units import parse_duration_ns

        try:
            baseline_s = parse_duration_ns(str(block["baseline"]), field=f"{path}.baseline", allow_zero=True) / 1e9
        except InvalidSpec as exc:
            errors.append((f"{path}.baseline", _message(exc)))
    spec = RecordSpec(path, lists["oneway"], lists["rtt"], placement, cgroup, baseline_s)
    return (None if errors else spec), errors


def recording_for(exp, inventory=None) -> "ExperimentRecording | None":
    """The recorders an experiment's ``record`` block asks for, resolved and built, not started; None without
    a block. Anything wrong (a bad block, an unknown host, a flow that cannot be recorded) raises
    ExperimentInvalid naming the field, before anything runs."""
    spec, errors = record_errors(getattr(exp, "extensions", ()))
    if errors:
        raise ExperimentInvalid(errors)
    if spec is None:
        return None
    recording, errors = _build(spec, inventory)
    if errors:
        raise ExperimentInvalid(errors)
    return recording


def _build(spec: RecordSpec, inventory) -> tuple["ExperimentRecording | None", list[tuple[str, str]]]:
    from ..errors import InvalidSpec
    from ..spec import Inventory, parse_flow
    from ..targets import resolve_interface
    from . import build
    from .bpf_recorder import PacketFlow

    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    if not isinstance(inventory, Inventory):
        try:
            inventory = Inventory.discover(inventory)
        except InvalidSpec as exc:
            return None, [(spec.path, f"the inventory: {_message(exc)}")]
    cgroup = Path(spec.cgroup) if spec.cgroup else None
    if spec.rtt or (spec.oneway and spec.placement == "socket"):
        cgroup, problem = _cgroup(cgroup)
        if problem:
            errors.append((f"{spec.path}.cgroup", problem))
    groups: dict[tuple, list] = {}
    rtt_flows: list = []
    for key, texts in (("oneway", spec.oneway), ("rtt", spec.rtt)):
        for j, text in enumerate(texts):
            where = f"{spec.path}.{key}[{j}]"
            try:
                flow = parse_flow(text, inventory)
                packets = _packet_flows(flow, text, PacketFlow)
                if key == "rtt":
                    if flow.protocol == "udp":
                        raise InvalidSpec("RTT samples come from TCP connections; this flow is UDP")
                    rtt_flows += [dataclasses.replace(p, protocol="tcp") for p in packets]
                    continue
                sender = resolve_interface(flow)
                receiver = None
                if spec.placement == "tc":  # the receiver's interface towards the sender, found the same way
                    receiver = resolve_interface(dataclasses.replace(flow, src=flow.dst, dst=flow.src))
                groups.setdefault((sender, receiver), []).extend(packets)
            except (ValueError, OSError) as exc:  # InvalidSpec is a ValueError
                errors.append((where, _message(exc)))
    try:
        rtt_flows = build.rtt_flows(rtt_flows, field=f"{spec.path}.rtt")
    except InvalidSpec as exc:
        errors.append((f"{spec.path}.rtt", _message(exc)))
    if errors:
        return None, errors
    recorders = build.build_recorders(groups, rtt_flows, cgroup=cgroup, rtt_field=f"{spec.path}.rtt")
    if spec.oneway and spec.placement == "tc":
        notes.append("one-way samples at the receiver's interface (tc) do not include holds in the receiver's "
                     "netfilter (the userspace engine's ingress delay): use placement socket for those")
    if spec.oneway:
        notes.append("one-way samples never include the userspace engine's egress hold (taken before any tc "
                     "hook); RTT samples do")
    if rtt_flows and not spec.cgroup:
        notes.append(f"RTT of TCP connections made by any process of the host ({cgroup}), of these flows")
    return ExperimentRecording(spec, recorders, notes), []


def _packet_flows(flow, label: str, PacketFlow) -> list:
    """The packets of ``flow`` SRC->DST as it travels, one entry per address and port pair (as plan rules
    expand a flow). Recording needs host addresses."""
    out = []
    for family in flow.families:
        srcs = [n for n in flow.src.networks if n.version == family] or [None]
        dsts = [n for n in flow.dst.networks if n.version == family] or [None]
        for net in (*srcs, *dsts):
            if net is not None and net.prefixlen != net.max_prefixlen:
                raise ValueError(f"{net} is a network; recording needs host addresses (name hosts)")
        for src in srcs:
            for dst in dsts:
                for sport in list(flow.src.ports) or [None]:
                    for dport in list(flow.dst.ports) or [None]:
                        out.append(PacketFlow(label, _host(src), _host(dst), sport, dport, flow.protocol))
    return out


def _cgroup(path: Path | None) -> tuple[Path | None, str | None]:
    """(the cgroup v2 directory to attach to, or a problem): the hierarchy's root by default."""
    from ..errors import Unsupported
    from ..kernel.record_program import cgroup2_root  # ctypes only: no bcc needed

    try:
        root = cgroup2_root()
    except Unsupported as exc:
        return None, str(exc)
    if path is None:
        return root, None
    if not (path == root or root in path.parents) or not (path / "cgroup.procs").exists():
        return None, f"{path} is not a cgroup v2 directory (the hierarchy is mounted at {root})"
    return path, None


def _message(exc: BaseException) -> str:
    """The problem without the field prefix InvalidSpec puts in front (our field path replaces it)."""
    text = str(exc)
    field = getattr(exc, "field", None)
    return text[len(field) + 2:] if field and text.startswith(f"{field}: ") else text


def _host(net) -> str | None:
    return None if net is None else str(ipaddress.ip_interface(net).ip)


class ExperimentRecording:
    """The block's recorders as one Recorder of the experiment runner: started together (then the
    baseline is recorded for ``baseline_s``), following the runner's phases, written together with the
    measured shift per flow and source."""

    source = "record"

    def __init__(self, spec: RecordSpec, recorders: list, notes: list[str]):
        self.spec = spec
        self.recorders = recorders
        self.notes = notes
        self._started: list = []

    def follow(self, phases) -> None:
        for rec in self.recorders:
            rec.follow(phases)

    def start(self) -> None:
        try:
            for rec in self.recorders:
                rec.start()
                self._started.append(rec)
            time.sleep(self.spec.baseline_s)  # the runner's baseline phase is running: give it samples
        except BaseException:  # (a signal in the sleep too: the runner never learns we started)
            self.stop()
            raise

    def stop(self) -> None:
        errors = []
        while self._started:
            rec = self._started.pop()
            try:
                rec.stop()
            except Exception as exc:  # noqa: BLE001 - the others' programs must go too
                errors.append(exc)
        if errors:
            raise RuntimeError(f"{len(errors)} recorder(s) failed to stop: {errors}") from errors[0]

    def live(self) -> dict:
        return {"source": self.source, "recorders": [r.live() for r in self.recorders]}

    def write(self, run_dir, phases) -> dict:
        from .recording import shifts_of

        run_dir = Path(run_dir)
        summaries = [rec.write(run_dir, phases) for rec in self.recorders]
        shifts = shifts_of(run_dir, summaries)
        return {"source": self.source, "samples": sum(s.get("samples", 0) for s in summaries),
                "lost": sum(s.get("lost", 0) for s in summaries), "recorders": summaries,
                "latency_shift": [dataclasses.asdict(s) for s in shifts],
                "shifts": [f"{s.flow}: {s.describe()}" for s in shifts], "notes": list(self.notes)}


__all__ = ["ExperimentRecording", "RecordSpec", "record_errors", "recording_for"]
