"""The cache warm-up loads exactly the classifier variants the engines build (engines/common.classifier_config)."""

from __future__ import annotations

from dataclasses import replace

from chaosinject.engines.common import MIN_RULES, classifier_config
from chaosinject.engines.warm import Warmed, classifier_variants, format_warmed
from chaosinject.kernel.probe import Capabilities

CAPS = Capabilities(kernel="6.1.0", root=True, bcc=True, bcc_headers="/x", btf=True, clsact=True, netem=False,
                    fq=False, prio=True, ifb=True, nfqueue=True, nft=True)


def test_without_netem_four_variants_with_netem_eight_each_compiled_differently():
    plain = classifier_variants(CAPS)
    with_netem = classifier_variants(replace(CAPS, netem=True))
    assert len(plain) == 4 and len(with_netem) == 8
    flags = {tuple(config.cflags()) for _, config in with_netem}
    assert len(flags) == 8  # no two variants compile to the same program
    assert {name for name, _ in plain} < {name for name, _ in with_netem}


def test_a_small_plan_gets_a_warmed_variant_and_a_big_one_its_own():
    warmed = {tuple(config.cflags()) for _, config in classifier_variants(replace(CAPS, netem=True))}
    for rules in (1, MIN_RULES):
        for seed in (None, 42):
            for hold in (False, True):
                for steer in (False, True):
                    got = classifier_config(rules, seed=seed, hold=hold, steer=steer)
                    assert tuple(got.cflags()) in warmed, (rules, seed, hold, steer)
    assert tuple(classifier_config(MIN_RULES + 1, seed=None, hold=False).cflags()) not in warmed


def test_the_report_says_what_was_compiled_cached_or_impossible():
    text = format_warmed([Warmed("a", 1.234, True), Warmed("b", 0.012, False),
                          Warmed("c", 0.0, False, "no BPF ring buffer")])
    assert "classifier (a): compiled and cached in 1.23 s" in text
    assert "classifier (b): cached already (12 ms to load)" in text
    assert "classifier (c): not for this kernel: no BPF ring buffer" in text
