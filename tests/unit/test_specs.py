import ipaddress

import pytest

from chaosinject.errors import InvalidSpec
from chaosinject.spec import (FaultSpec, GilbertElliott, Inventory, parse_duration_ns, parse_flow, parse_loss_burst,
                           parse_percent_ratio)

INVENTORY = Inventory.from_mapping({"hosts": {
    "api": {"addresses": ["10.77.0.2", "fd00:77::2"], "netns": "lab-api", "interface": "veth-api"},
    "db": {"addresses": ["10.77.0.3", "fd00:77::3"], "ports": [5432]},
}})


@pytest.mark.parametrize("text, nets, port", [
    ("*", (), None),
    ("*:53", (), 53),
    ("10.0.0.2", ("10.0.0.2/32",), None),
    ("10.0.0.2:5432", ("10.0.0.2/32",), 5432),
    ("10.0.0.0/24", ("10.0.0.0/24",), None),
    ("10.0.0.0/24:53", ("10.0.0.0/24",), 53),
    ("fd00::2", ("fd00::2/128",), None),
    ("fd00::/64", ("fd00::/64",), None),
    ("[fd00::2]:5432", ("fd00::2/128",), 5432),
    ("[fd00::/64]:53", ("fd00::/64",), 53),
])
def test_destination_forms(text, nets, port):
    flow = parse_flow(f"*->{text}")
    assert flow.dst.networks == tuple(ipaddress.ip_network(n) for n in nets)
    assert flow.dst.ports == ((port,) if port else ())
    assert flow.src.any_address and flow.protocol is None


def test_protocol_suffix_and_cidr_do_not_clash():
    flow = parse_flow("10.0.0.0/8->10.1.0.0/16/udp")
    assert flow.protocol == "udp"
    assert flow.dst.networks == (ipaddress.ip_network("10.1.0.0/16"),)
    assert parse_flow("a->b/TCP", Inventory.from_mapping(
        {"hosts": {"a": {"addresses": ["10.0.0.1"]}, "b": {"addresses": ["10.0.0.2"]}}})).protocol == "tcp"


def test_inventory_names_resolve_with_ports_on_the_destination_only():
    flow = parse_flow("api->db", INVENTORY)
    assert flow.src.name == "api" and flow.src.ports == () and flow.src.netns == "lab-api"
    assert flow.src.interface == "veth-api"
    assert flow.dst.ports == (5432,)
    assert flow.families == (4, 6)
    reverse = parse_flow("db->api:8080", INVENTORY)
    assert reverse.src.ports == () and reverse.dst.ports == (8080,)


def test_families_are_intersected():
    assert parse_flow("10.0.0.1->*").families == (4,)
    assert parse_flow("*->fd00::1").families == (6,)
    assert parse_flow("*->*").families == (4, 6)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty flow"),
    ("10.0.0.1", "exactly one '->'"),
    ("a->b->c", "exactly one '->'"),
    ("->10.0.0.1", "missing source"),
    ("10.0.0.1->", "looks cut by the shell"),
    ("10.0.0.1->10.0.0.300", "not an IP address"),
    ("10.0.0.1->10.0.0.1/24", "host bits set"),
    ("10.0.0.1->10.0.0.2:0", "port must be"),
    ("10.0.0.1->10.0.0.2:70000", "port must be"),
    ("10.0.0.1->[10.0.0.2]:80", "brackets are for IPv6"),
    ("10.0.0.1->fd00::1", "different IP versions"),
    ("nosuchhost->*", "unknown name"),
    ("10.0.0.1->$$$", "neither"),
])
def test_bad_flows_name_the_problem(text, fragment):
    with pytest.raises(InvalidSpec) as err:
        parse_flow(text, INVENTORY)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_units():
    assert parse_duration_ns("200ms") == 200_000_000
    assert parse_duration_ns("1.5s") == 1_500_000_000
    assert parse_duration_ns("2m") == 120_000_000_000
    assert parse_percent_ratio("10%", field="loss") == pytest.approx(0.10)
    assert parse_percent_ratio("0.5", field="loss") == pytest.approx(0.005)
    for bad in ("200", "ms", "-1s", "1 parsec", "0s"):
        with pytest.raises(InvalidSpec):
            parse_duration_ns(bad)
    for bad in ("101%", "-5%", "ten", "5%%"):
        with pytest.raises(InvalidSpec, match="loss"):
            parse_percent_ratio(bad, field="loss")


def test_gemodel_defaults_follow_netem():
    ge = parse_loss_burst("1%")
    assert (ge.p, ge.r, ge.bad_loss_ratio, ge.good_loss_ratio) == pytest.approx((0.01, 0.99, 1.0, 0.0))
    ge = parse_loss_burst("1%,25%")
    assert ge.expected_loss_ratio == pytest.approx(0.01 / 0.26)
    assert ge.mean_bad_run_packets == pytest.approx(4.0)
    ge = parse_loss_burst("5%,50%,80%,1%")
    bad = 0.05 / 0.55
    assert ge.expected_loss_ratio == pytest.approx(bad * 0.8 + (1 - bad) * 0.01)
    with pytest.raises(InvalidSpec, match="absorbing"):
        GilbertElliott(p=0.1, r=0.0)
    with pytest.raises(InvalidSpec):
        parse_loss_burst("1%,2%,3%,4%,5%")


def test_fault_combinations():
    assert FaultSpec(loss_ratio=0.1, corrupt_ratio=0.01, duplicate_ratio=0.02).expected_loss_ratio == 0.1
    assert FaultSpec(partition=True).expected_loss_ratio == 1.0
    with pytest.raises(InvalidSpec, match="no fault"):
        FaultSpec()
    with pytest.raises(InvalidSpec, match="choose one"):
        FaultSpec(loss_ratio=0.1, loss_burst=parse_loss_burst("1%"))
    with pytest.raises(InvalidSpec, match="partition"):
        FaultSpec(partition=True, loss_ratio=0.1)
    with pytest.raises(InvalidSpec, match="loss_ratio"):
        FaultSpec(loss_ratio=1.5)


def test_inventory_validation(tmp_path):
    path = tmp_path / "inv.toml"
    path.write_text('[hosts.api]\naddresses = ["10.0.0.1"]\nports = [80]\nnetns = "x"\n')
    inv = Inventory.load(path)
    assert inv.get("api").ports == (80,)
    path.write_text('[hosts.api]\naddresses = ["10.0.0.999"]\n')
    with pytest.raises(InvalidSpec, match="hosts.api.addresses"):
        Inventory.load(path)
    path.write_text('[hosts.api]\naddresses = ["10.0.0.1"]\ncolour = "red"\n')
    with pytest.raises(InvalidSpec, match="unknown keys"):
        Inventory.load(path)
    path.write_text("not = [toml")
    with pytest.raises(InvalidSpec, match="not valid TOML"):
        Inventory.load(path)
    with pytest.raises(InvalidSpec, match="not found"):
        Inventory.load(tmp_path / "missing.toml")
