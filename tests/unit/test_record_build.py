"""The one recorder builder behind `--record` and an experiment's record block, without root: one-way flows
split over recorders of MAX_FLOWS, one RTT recorder, and more RTT flows than it holds refused by both callers
with the limit named (nothing built)."""

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.experiment.spec import ExperimentInvalid, parse_experiment
from chaosinject.kernel.record_program import MAX_FILTERS, cgroup2_root
from chaosinject.plan import Interface, build_plan
from chaosinject.record import PacketFlow
from chaosinject.record.build import MAX_FLOWS, build_recorders, rtt_flows
from chaosinject.record.experiment import recording_for
from chaosinject.record.runrecord import recorders_for_plan
from chaosinject.spec import FaultSpec, Inventory, parse_flow

PORTS = list(range(9000, 9000 + MAX_FLOWS + 1))  # one more than a recorder holds


def _inventory(ports) -> Inventory:
    return Inventory.from_mapping({"hosts": {
        "client": {"addresses": ["10.9.0.1"], "netns": "ns-c", "interface": "vc"},
        "server": {"addresses": ["10.9.0.2"], "ports": ports, "netns": "ns-s", "interface": "vs"}}})


def _plan(ports, direction="egress", protocol="tcp"):
    spec = parse_flow(f"client->server/{protocol}", _inventory(ports))
    return build_plan([(spec, Interface("vc", "ns-c"))], FaultSpec(delay_ns=20_000_000), direction=direction,
                      duration_ns=10**9, engine="userspace")


def _cgroup(tmp_path):
    (cg := tmp_path / "cg").mkdir()
    (cg / "cgroup.procs").write_text("")
    return cg


def test_the_limit_is_the_kernel_filter_map():
    assert MAX_FLOWS == MAX_FILTERS == 16


def test_one_way_flows_are_split_over_recorders_of_at_most_max_flows():
    recs, _ = recorders_for_plan(_plan(PORTS, protocol="udp"))
    assert [len(r.flows) for r in recs] == [MAX_FLOWS, 1]
    assert {r.sender for r in recs} == {Interface("vc", "ns-c")} and all(r.placement == "tc" for r in recs)


def test_cli_refuses_more_rtt_flows_than_the_map_holds(tmp_path):
    cg = _cgroup(tmp_path)
    with pytest.raises(InvalidSpec, match=f"at most {MAX_FLOWS}") as info:
        recorders_for_plan(_plan(PORTS), cgroup=cg)
    assert info.value.field == "flow" and f"{len(PORTS)} address/port pairs" in str(info.value)
    # at the limit: one RTT recorder with every flow (it used to keep the first 16 of more, silently)
    recs, _ = recorders_for_plan(_plan(PORTS[:MAX_FLOWS]), cgroup=cg)
    (rtt,) = [r for r in recs if r.source == "rtt"]
    assert [f.dport for f in rtt.flows] == PORTS[:MAX_FLOWS]


def test_both_directions_count_a_connection_once(tmp_path):
    """direction both makes a rule per direction; sock_ops matches a connection either way round, so the
    ingress rule's mirrored flow adds nothing and does not count against the limit."""
    plan = _plan(PORTS[:10], direction="both")
    assert len(plan.rules) == 20
    recs, _ = recorders_for_plan(plan, cgroup=_cgroup(tmp_path))
    (rtt,) = [r for r in recs if r.source == "rtt"]
    assert [(f.src, f.dst, f.dport) for f in rtt.flows] == [("10.9.0.1", "10.9.0.2", p) for p in PORTS[:10]]


def test_experiment_refuses_more_rtt_flows_with_the_field_path(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_text('[hosts.api]\naddresses = ["10.9.0.1"]\nnetns = "ns-api"\ninterface = "veth-api"\n'
                    f'[hosts.db]\naddresses = ["10.9.0.2"]\nports = {PORTS}\nnetns = "ns-db"\n'
                    'interface = "veth-db"\n')
    exp = parse_experiment({"title": "t", "method": [{"type": "action", "name": "a", "provider": {
        "type": "process", "path": "true"}}], "extensions": [{"name": "chaos-inject", "record": {"rtt": ["api->db"]}}]})
    with pytest.raises(ExperimentInvalid) as info:
        recording_for(exp, Inventory.load(path))
    assert [(p, m) for p, m in info.value.errors if p == "extensions[0].record.rtt" and f"at most {MAX_FLOWS}" in m], \
        info.value.errors


def test_mirrors_with_another_label_are_kept():
    a = PacketFlow("a->b", "10.0.0.1", "10.0.0.2", dport=80, protocol="tcp")
    mirror = PacketFlow("a->b", "10.0.0.2", "10.0.0.1", sport=80, protocol="tcp")
    other = PacketFlow("b->a", "10.0.0.2", "10.0.0.1", sport=80, protocol="tcp")
    assert rtt_flows([a, mirror, a, other], field="x") == [a, other]


def test_build_recorders_places_by_receiver():
    flow = PacketFlow("a->b", "10.0.0.1", "10.0.0.2", dport=80, protocol="tcp")
    recs = build_recorders({(Interface("va", "a"), Interface("vb", "b")): [flow], (Interface("va", "a"), None): [flow]},
                           [flow], cgroup=cgroup2_root(), rtt_field="x")
    assert [(r.source, r.placement) for r in recs] == [("oneway", "tc"), ("oneway", "socket"), ("rtt", "sock_ops")]


def test_a_tcp_flow_records_rtt_without_a_cgroup_on_the_cgroup_v2_root():
    """`--record` alone: RTT of the flow's connections made by any process (sock_ops on the cgroup v2 root,
    the flow filtered in the kernel); UDP flows get none; more pairs than a recorder holds: a note, no error
    (nobody asked for RTT by name), naming the limit."""
    recs, notes = recorders_for_plan(_plan(PORTS[:2]))
    (rtt,) = [r for r in recs if r.source == "rtt"]
    assert rtt.cgroup == cgroup2_root() and [f.dport for f in rtt.flows] == PORTS[:2]
    assert not [r for r in recorders_for_plan(_plan(PORTS[:2], protocol="udp"))[0] if r.source == "rtt"]
    recs, notes = recorders_for_plan(_plan(PORTS))
    assert not [r for r in recs if r.source == "rtt"] and [r for r in recs if r.source == "oneway"]
    assert any(n.startswith("no TCP RTT samples") and f"at most {MAX_FLOWS}" in n for n in notes), notes
