import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosinject import cli
from chaosinject.errors import InvalidSpec
from chaosinject.kernel import tc
from chaosinject.spec import FlowSpec, parse_duration_ns, parse_flow, parse_loss_burst, parse_percent_ratio


@pytest.fixture
def no_kernel(monkeypatch):
    """Any attempt to change the kernel fails the test."""
    def forbidden(*a, **k):
        raise AssertionError("the kernel was touched")

    for name in ("add_clsact", "delete_clsact", "add_bpf_filter", "delete_bpf_filter"):
        monkeypatch.setattr(tc, name, forbidden)
    monkeypatch.setattr("chaosinject.kernel.bpf.ClassifierProgram.__init__", forbidden)


def test_dry_run_prints_the_plan_and_changes_nothing(no_kernel, capsys):
    code = cli.main(["--flow", "10.0.0.1->10.0.0.2:5432/tcp", "--loss", "10%", "--duration", "60s",
                     "--interface", "eth9", "--dry-run", "--direction", "both", "--seed", "7"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cls_bpf filter on egress" in out and "cls_bpf filter on ingress" in out
    assert "egress  tcp 10.0.0.1 -> 10.0.0.2:5432" in out
    assert "ingress tcp 10.0.0.2:5432 -> 10.0.0.1" in out
    assert "seed 7" in out and "nothing was changed" in out


@pytest.mark.parametrize("args, fragment", [
    (["--flow", "10.0.0.1->nope", "--loss", "10%", "--duration", "1s"], "unknown name"),
    (["--flow", "10.0.0.1->10.0.0.2", "--loss", "110%", "--duration", "1s"], "loss"),
    (["--flow", "10.0.0.1->10.0.0.2", "--loss", "10%", "--duration", "60"], "duration"),
    (["--flow", "10.0.0.1->10.0.0.2", "--duration", "1s"], "no fault"),
    (["--flow", "10.0.0.1->10.0.0.2", "--partition", "--loss", "1%", "--duration", "1s"], "partition"),
    (["--flow", "10.0.0.1->*", "--loss", "1%", "--duration", "1s"], "--interface"),
    (["--flow", "10.0.0.1->10.0.0.2", "--loss-burst", "1%,0%", "--duration", "1s"], "absorbing"),
    (["--flow", "10.0.0.1->10.0.0.2", "--loss", "1%", "--duration", "1s", "--lease", "1ms"], "lease"),
])
def test_bad_input_exits_2_naming_the_problem(no_kernel, capsys, args, fragment):
    assert cli.main(args) == cli.EXIT_USAGE
    assert fragment in capsys.readouterr().err


def test_not_root_is_a_clear_error(no_kernel, monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code = cli.main(["--flow", "10.0.0.1->10.0.0.2", "--loss", "1%", "--duration", "1s", "--interface", "lo"])
    assert code == cli.EXIT_UNSUPPORTED
    assert "needs root" in capsys.readouterr().err


side = st.one_of(
    st.sampled_from(["*", "api", "db", "10.0.0.1", "fd00::1", "10.0.0.0/8", "[fd00::1]:80", "::/0"]),
    st.text(alphabet="0123456789abcdef:./[]*->", max_size=20),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=40), st.builds(lambda a, b, p: f"{a}->{b}{p}", side, side,
                                                  st.sampled_from(["", "/tcp", "/udp", "/icmp", "/"]))))
def test_fuzzed_flows_parse_or_raise_invalid_spec(text):
    try:
        flow = parse_flow(text)
    except InvalidSpec as exc:
        assert str(exc)
    else:
        assert isinstance(flow, FlowSpec) and flow.families


@settings(max_examples=300)
@given(st.text(max_size=16))
def test_fuzzed_quantities_parse_or_raise_invalid_spec(text):
    for parse in (lambda t: parse_duration_ns(t), lambda t: parse_percent_ratio(t, field="x"), parse_loss_burst):
        try:
            parse(text)
        except InvalidSpec:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flow=st.text(max_size=30), loss=st.text(max_size=8), duration=st.text(max_size=8))
def test_fuzzed_cli_never_touches_the_kernel(no_kernel, capsys, flow, loss, duration):
    try:
        code = cli.main(["--flow", flow, "--loss", loss, "--duration", duration, "--interface", "eth9",
                         "--dry-run"])
    except SystemExit as exc:  # argparse's own usage error (e.g. a value that looks like an option)
        code = exc.code
    assert code in (cli.EXIT_OK, cli.EXIT_USAGE)
    capsys.readouterr()
