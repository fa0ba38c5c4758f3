import ctypes
import ipaddress

import pytest

from chaosinject.engines.rules import compile_rules
from chaosinject.errors import InvalidSpec
from chaosinject.kernel import abi
from chaosinject.plan import Interface, build_plan
from chaosinject.spec import FaultSpec, Inventory, parse_flow, parse_loss_burst

IFACE = Interface("veth0", "ns-a")
LOSS = FaultSpec(loss_ratio=0.1)
SECOND = 1_000_000_000


def plan_for(*flows, fault=LOSS, direction="egress", **kw):
    return build_plan([(parse_flow(f), IFACE) for f in flows], fault, direction=direction,
                      duration_ns=kw.pop("duration_ns", 10 * SECOND), **kw)


def test_egress_rule_matches_the_flow_as_written():
    plan = plan_for("10.0.0.1->10.0.0.2:5432/tcp")
    (rule,) = plan.rules
    m = rule.match
    assert (m.hook, m.family, m.protocol, m.sport, m.dport) == ("egress", 4, 6, None, 5432)
    assert m.src == ipaddress.ip_network("10.0.0.1/32") and m.dst == ipaddress.ip_network("10.0.0.2/32")


def test_ingress_rule_matches_the_replies():
    plan = plan_for("10.0.0.1->10.0.0.2:5432/tcp", direction="both")
    egress, ingress = plan.rules
    assert ingress.match.hook == "ingress"
    assert ingress.match.src == egress.match.dst and ingress.match.dst == egress.match.src
    assert ingress.match.sport == 5432 and ingress.match.dport is None
    assert plan.hooks_for(IFACE) == ("egress", "ingress")


def test_names_with_two_families_and_ports_expand():
    inv = Inventory.from_mapping({"hosts": {
        "api": {"addresses": ["10.0.0.1", "fd00::1"]},
        "db": {"addresses": ["10.0.0.2", "fd00::2"], "ports": [5432, 5433]}}})
    plan = build_plan([(parse_flow("api->db", inv), IFACE)], LOSS, duration_ns=SECOND)
    assert len(plan.rules) == 4  # 2 families x 2 ports
    assert {r.match.family for r in plan.rules} == {4, 6}
    assert [r.rule_id for r in plan.rules] == [0, 1, 2, 3]


def test_plan_validation():
    with pytest.raises(InvalidSpec, match="direction"):
        plan_for("10.0.0.1->10.0.0.2", direction="sideways")
    with pytest.raises(InvalidSpec, match="lease"):
        plan_for("10.0.0.1->10.0.0.2", lease_ns=1000)
    with pytest.raises(InvalidSpec, match="duration"):
        plan_for("10.0.0.1->10.0.0.2", duration_ns=0)
    with pytest.raises(InvalidSpec, match="seed"):
        plan_for("10.0.0.1->10.0.0.2", seed=-1)
    with pytest.raises(InvalidSpec, match="expand to 4 rules; at most 1"):
        build_plan([(parse_flow("*->*"), IFACE)], LOSS, duration_ns=SECOND, max_rules=1, direction="both")


def test_describe_lists_objects_and_rules():
    text = plan_for("10.0.0.1->[fd00::2]:53/udp".replace("10.0.0.1", "fd00::1")).describe()
    assert "clsact" in text and "cls_bpf filter on egress" in text
    assert "[fd00::2]:53" in text and "veth0 (netns ns-a)" in text


def test_compile_rules_keys_are_masked_and_shapes_sorted_most_specific_first():
    plan = plan_for("10.0.0.0/24->10.0.1.5:53/udp", "10.0.0.1->10.0.1.5:53/udp", "*->10.0.1.0/24")
    shapes, entries = compile_rules(plan.rules, plan.fault, expires_ns=123)
    assert len(shapes) == 3
    plens = [bin(int.from_bytes(bytes(s.smask), "little")).count("1")
             + bin(int.from_bytes(bytes(s.dmask), "little")).count("1") for s in shapes]
    assert plens == sorted(plens, reverse=True)
    key, rule = entries[0]
    assert bytes(key.saddr)[:4] == ipaddress.ip_address("10.0.0.0").packed
    assert key.dport == int.from_bytes((53).to_bytes(2, "big"), "little")
    assert key.proto == 17 and rule.expires_ns == 123 and rule.flags == abi.F_LOSS
    assert rule.loss_threshold == round(0.1 * 2**32)
    # every key refers to the shape whose masks produce it
    for key, _ in entries:
        shape = shapes[key.shape]
        assert shape.family == key.family
        assert all((a & m) == a for a, m in zip(key.daddr, shape.dmask))


def test_thresholds_are_exact_at_the_ends():
    _, ((_, rule),) = compile_rules(plan_for("10.0.0.1->10.0.0.2", fault=FaultSpec(
        loss_burst=parse_loss_burst("1%,25%,100%,0%"))).rules,
        FaultSpec(loss_burst=parse_loss_burst("1%,25%,100%,0%")), 0)
    assert rule.flags == abi.F_GEMODEL
    assert rule.ge_bad_loss_threshold == 2**32 and rule.ge_good_loss_threshold == 0


def test_abi_struct_sizes_match_the_header():
    # the header is the contract; sizes are also checked against bcc's view when a program loads
    assert ctypes.sizeof(abi.RuleKey) == 40
    assert ctypes.sizeof(abi.Shape) == 40
    assert ctypes.sizeof(abi.Rule) == 96
    assert ctypes.sizeof(abi.Counters) == 64
    assert ctypes.sizeof(abi.RuleState) == 24


def test_several_flows_with_their_own_faults():
    delay, loss = FaultSpec(delay_ns=30_000_000), FaultSpec(loss_ratio=0.2)
    plan = build_plan([(parse_flow("10.0.0.1->10.0.0.2:9000/udp"), IFACE, delay),
                       (parse_flow("10.0.0.1->10.0.0.2:9001/udp"), IFACE, loss),
                       (parse_flow("10.0.0.1->10.0.0.3/udp"), IFACE, delay)], duration_ns=SECOND)
    assert plan.faults == (delay, loss)
    assert [r.fault_index for r in plan.rules] == [0, 1, 0]
    with pytest.raises(ValueError, match="several faults"):
        plan.fault
    _, entries = compile_rules(plan.rules, plan.faults, 0)
    assert [rule.flags for _, rule in entries] == [abi.F_DELAY, abi.F_LOSS, abi.F_DELAY]
    assert entries[0][1].delay_ns == 30_000_000 and entries[1][1].delay_ns == 0
    assert "fault #1" in plan.describe()
    with pytest.raises(InvalidSpec, match="a packet can have one fault"):
        build_plan([(parse_flow("10.0.0.1->10.0.0.2"), IFACE, delay), (parse_flow("10.0.0.1->10.0.0.2"), IFACE, loss)],
                   duration_ns=SECOND)
