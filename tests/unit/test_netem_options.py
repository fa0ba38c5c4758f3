import struct

import pytest

from chaosinject.kernel import netem, rawnl
from chaosinject.spec import FaultSpec, parse_loss_burst


def options_of(attrs: bytes) -> tuple[tuple, dict[int, bytes]]:
    parsed = dict(rawnl.parse_attrs(attrs))
    assert parsed[rawnl.TCA_KIND] == b"netem\0"
    opts = parsed[rawnl.TCA_OPTIONS]
    qopt = struct.unpack_from("=IIIIII", opts)
    return qopt, dict(rawnl.parse_attrs(opts[24:]))


def test_delay_jitter_distribution_encode_as_the_kernel_reads_them():
    fault = FaultSpec(delay_ns=200_000_000, jitter_ns=10_000_000, distribution="normal",
                      delay_correlation_ratio=0.25)
    (latency, limit, loss, gap, dup, jitter), extra = options_of(netem.netem_attrs(fault))
    assert latency == 200_000_000 >> 6 and jitter == 10_000_000 >> 6 and loss == 0 and gap == 0
    assert struct.unpack("=q", extra[netem.TCA_NETEM_LATENCY64])[0] == 200_000_000
    assert struct.unpack("=q", extra[netem.TCA_NETEM_JITTER64])[0] == 10_000_000
    assert struct.unpack("=III", extra[netem.TCA_NETEM_CORR])[0] == round(0.25 * 0xFFFFFFFF)
    table = extra[netem.TCA_NETEM_DELAY_DIST]
    assert len(table) % 2 == 0 and len(table) >= 2 * 4096  # iproute2's normal.dist
    assert limit >= 0.2 * netem.ASSUMED_MAX_PPS  # the queue can hold the whole delay at the assumed rate


def test_gemodel_passes_h_not_one_minus_h():
    fault = FaultSpec(loss_burst=parse_loss_burst("5%,25%,80%,1%"))
    _, extra = options_of(netem.netem_attrs(fault))
    nested = dict(rawnl.parse_attrs(extra[netem.TCA_NETEM_LOSS]))
    p, r, h, k1 = struct.unpack("=IIII", nested[netem.NETEM_LOSS_GE])
    assert p == netem.prob_u32(0.05) and r == netem.prob_u32(0.25)
    assert h == netem.prob_u32(0.20), "the kernel wants h = P(no loss in the bad state)"
    assert k1 == netem.prob_u32(0.01)


def test_reorder_sets_gap_and_partition_is_total_loss():
    (_, _, _, gap, _, _), extra = options_of(netem.netem_attrs(FaultSpec(delay_ns=10**7, reorder_ratio=0.1)))
    assert gap == 1 and netem.TCA_NETEM_REORDER in extra
    (_, _, loss, _, _, _), _ = options_of(netem.netem_attrs(FaultSpec(partition=True)))
    assert loss == 0xFFFFFFFF


def test_rate_limit_sizing():
    fault = FaultSpec(delay_ns=100_000_000, rate_bps=1_000_000)
    _, extra = options_of(netem.netem_attrs(fault))
    assert struct.unpack_from("=I", extra[netem.TCA_NETEM_RATE])[0] == 125_000
    assert netem.netem_limit(fault) == 1000  # 1 Mbit/s of 64-byte packets for 100 ms fits in the floor


def test_unknown_distribution_file_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(netem, "DIST_DIRS", ())
    netem.distribution_table.cache_clear()
    with pytest.raises(FileNotFoundError, match="pareto.dist"):
        netem.distribution_table("pareto")
    netem.distribution_table.cache_clear()


def test_fq_options_size_the_horizon_and_limits_for_the_delay():
    from chaosinject.engines.edt import TCA_FQ_HORIZON, TCA_FQ_HORIZON_DROP, TCA_FQ_PLIMIT, fq_attrs
    from chaosinject.plan import Interface, build_plan
    from chaosinject.spec import parse_flow

    plan = build_plan([(parse_flow("10.0.0.1->10.0.0.2"), Interface("eth0"))], FaultSpec(delay_ns=8 * 10**9),
                      duration_ns=10**9)
    parsed = dict(rawnl.parse_attrs(fq_attrs(plan)))
    assert parsed[rawnl.TCA_KIND] == b"fq\0"
    opts = dict(rawnl.parse_attrs(parsed[rawnl.TCA_OPTIONS]))
    assert struct.unpack("=I", opts[TCA_FQ_HORIZON])[0] == 16_000_000  # 2 x 8 s, in us
    assert opts[TCA_FQ_HORIZON_DROP] == b"\0", "beyond the horizon: capped, never dropped"
    assert struct.unpack("=I", opts[TCA_FQ_PLIMIT])[0] >= 8 * netem.ASSUMED_MAX_PPS


def test_four_state_model_encodes_in_the_kernel_order_and_predicts_its_loss():
    import numpy as np

    from chaosinject.spec import parse_loss_state

    gi = parse_loss_state("5%,40%,10%,30%,1%")  # p13 p31 p32 p23 p14, netem's order
    _, extra = options_of(netem.netem_attrs(FaultSpec(loss_state=gi)))
    nested = dict(rawnl.parse_attrs(extra[netem.TCA_NETEM_LOSS]))
    p13, p31, p32, p14, p23 = struct.unpack("=IIIII", nested[netem.NETEM_LOSS_GI])  # struct tc_netem_gimodel
    assert (p13, p31, p32, p14, p23) == tuple(netem.prob_u32(x) for x in (0.05, 0.40, 0.10, 0.01, 0.30))
    defaults = parse_loss_state("5%")
    assert (defaults.p31, defaults.p32, defaults.p23, defaults.p14) == pytest.approx((0.95, 0.0, 1.0, 0.0))
    # the stationary loss ratio agrees with a simulation of netem's per-packet rules
    rng = np.random.default_rng(3)
    state, lost, n = 1, 0, 200_000
    draws = rng.random(n)
    for u in draws:
        if state == 1:
            if u < gi.p14:
                state, lost = 4, lost + 1
            elif u < gi.p14 + gi.p13:
                state, lost = 3, lost + 1
        elif state == 2:
            if u < gi.p23:
                state, lost = 3, lost + 1
        elif state == 3:
            if u < gi.p32:
                state = 2
            elif u < gi.p32 + gi.p31:
                state = 1
            else:
                lost += 1
        else:
            state = 1
    assert abs(lost / n - gi.expected_loss_ratio) < 0.01, (lost / n, gi.expected_loss_ratio)
