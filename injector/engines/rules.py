"""Plan rules -> classifier map contents (shapes + exact keys). Pure: builds ctypes values, loads nothing."""

from __future__ import annotations

import ipaddress

from ..kernel import abi
from ..plan import PlannedRule, RuleMatch
from ..spec.fault import FaultSpec

ShapeKey = tuple[int, int, int, int, int, int, int]  # family, hook, src_plen, dst_plen, proto?, sport?, dport?


def shape_key(match: RuleMatch) -> ShapeKey:
    return (match.family, abi.HOOKS[match.hook],
            match.src.prefixlen if match.src is not None else 0,
            match.dst.prefixlen if match.dst is not None else 0,
            int(match.protocol != 0), int(match.sport is not None), int(match.dport is not None))


def _specificity(key: ShapeKey) -> tuple:
    family, hook, src_plen, dst_plen, proto, sport, dport = key
    return (src_plen + dst_plen, proto + sport + dport, src_plen, dst_plen, sport, dport, proto, family, hook)


def _mask_words(family: int, prefixlen: int) -> list[int]:
    net = ipaddress.ip_network(f"{'0.0.0.0' if family == 4 else '::'}/{prefixlen}")
    return abi.address_words(net.netmask)


def make_shape(key: ShapeKey) -> abi.Shape:
    family, hook, src_plen, dst_plen, proto, sport, dport = key
    shape = abi.Shape(family=family, hook=hook, match_proto=proto, match_sport=sport, match_dport=dport)
    shape.smask[:] = _mask_words(family, src_plen)
    shape.dmask[:] = _mask_words(family, dst_plen)
    return shape


def make_key(match: RuleMatch, shape_index: int) -> abi.RuleKey:
    key = abi.RuleKey(family=match.family, proto=match.protocol, hook=abi.HOOKS[match.hook], shape=shape_index,
                      sport=abi.port_be(match.sport) if match.sport else 0,
                      dport=abi.port_be(match.dport) if match.dport else 0)
    if match.src is not None:
        key.saddr[:] = abi.address_words(match.src.network_address)
    if match.dst is not None:
        key.daddr[:] = abi.address_words(match.dst.network_address)
    return key


def make_rule(rule_id: int, fault: FaultSpec, expires_ns: int) -> abi.Rule:
    t = abi.probability_threshold
    rule = abi.Rule(expires_ns=expires_ns, id=rule_id)
    flags = 0
    if fault.partition:
        flags |= abi.F_PARTITION
    if fault.loss_ratio:
        flags |= abi.F_LOSS
        rule.loss_threshold = t(fault.loss_ratio)
    if fault.loss_burst:
        flags |= abi.F_GEMODEL
        ge = fault.loss_burst
        rule.ge_p_threshold, rule.ge_r_threshold = t(ge.p), t(ge.r)
        rule.ge_bad_loss_threshold, rule.ge_good_loss_threshold = t(ge.bad_loss_ratio), t(ge.good_loss_ratio)
    if fault.corrupt_ratio:
        flags |= abi.F_CORRUPT
        rule.corrupt_threshold = t(fault.corrupt_ratio)
    if fault.duplicate_ratio:
        flags |= abi.F_DUPLICATE
        rule.duplicate_threshold = t(fault.duplicate_ratio)
    if fault.delay_ns:  # served in the classifier only by the EDT engine (an sch_fq root holds the packet)
        flags |= abi.F_DELAY
        rule.delay_ns, rule.jitter_ns = fault.delay_ns, fault.jitter_ns
        rule.jitter_dist = abi.DIST_TABLE if fault.distribution not in (None, "uniform") else abi.DIST_UNIFORM
    rule.flags = flags
    return rule


def compile_rules(rules: tuple[PlannedRule, ...] | list[PlannedRule],
                  faults: FaultSpec | tuple[FaultSpec, ...] | list[FaultSpec], expires_ns: int
                  ) -> tuple[list[abi.Shape], list[tuple[abi.RuleKey, abi.Rule]]]:
    """Shapes sorted most specific first (first match wins), and one exact key per rule.

    ``faults``: one fault for every rule, or the plan's faults indexed by each rule's ``fault_index``.
    """
    per_index = (faults,) if isinstance(faults, FaultSpec) else tuple(faults)
    keys = sorted({shape_key(r.match) for r in rules}, key=_specificity, reverse=True)
    index = {key: i for i, key in enumerate(keys)}
    shapes = [make_shape(key) for key in keys]
    entries = [(make_key(r.match, index[shape_key(r.match)]),
                make_rule(r.rule_id, per_index[r.fault_index if len(per_index) > 1 else 0], expires_ns))
               for r in rules]
    return shapes, entries
