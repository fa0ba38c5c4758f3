"""--dry-run warns about faults this kernel cannot translate (no sch_netem / sch_fq), from read-only looks."""

import pytest

from chaosinject.engines.dryrun import dry_run_warnings, kernel_has_qdisc
from chaosinject.spec import FaultSpec


def _none(module, symbol):
    return False


def _all(module, symbol):
    return True


@pytest.mark.parametrize("fault, named", [
    (FaultSpec(reorder_ratio=0.1, delay_ns=10_000_000), "--reorder"),
    (FaultSpec(rate_bps=125_000), "--rate"),
    (FaultSpec(delay_ns=10_000_000, loss_ratio=0.05), "--delay, --loss"),
])
def test_netem_only_faults_warn_where_the_qdiscs_are_missing(fault, named):
    [warning] = dry_run_warnings(fault, has_qdisc=_none)
    assert f"cannot translate {named} " in warning and "sch_netem" in warning and "exit 3" in warning
    assert dry_run_warnings(fault, has_qdisc=_all) == []


@pytest.mark.parametrize("fault", [FaultSpec(loss_ratio=0.1), FaultSpec(delay_ns=10_000_000),
                                   FaultSpec(corrupt_ratio=0.01, duplicate_ratio=0.01)])
def test_faults_other_engines_serve_do_not_warn(fault):
    assert dry_run_warnings(fault, has_qdisc=_none) == []


def test_an_explicit_engine_is_judged_alone():
    [warning] = dry_run_warnings(FaultSpec(loss_ratio=0.1), "netem", has_qdisc=_none)
    assert "the netem engine needs sch_netem, sch_prio" in warning
    assert dry_run_warnings(FaultSpec(loss_ratio=0.1), "ebpf", has_qdisc=_none) == []


def test_kernel_has_qdisc_reads_kallsyms_and_modules(tmp_path):
    syms = tmp_path / "kallsyms"
    syms.write_text("0000000000000000 t fq_enqueue\n0000000000000000 t prio_enqueue\t[sch_prio]\n")
    mods = tmp_path / "modules"
    (mods / "kernel" / "net" / "sched").mkdir(parents=True)
    (mods / "kernel" / "net" / "sched" / "sch_netem.ko.xz").write_bytes(b"")
    assert kernel_has_qdisc("sch_fq", "fq_enqueue", kallsyms=str(syms), modules_dir=str(tmp_path / "none"))
    assert kernel_has_qdisc("sch_prio", "prio_enqueue", kallsyms=str(syms), modules_dir=str(tmp_path / "none"))
    assert kernel_has_qdisc("sch_netem", "netem_enqueue", kallsyms=str(syms), modules_dir=str(mods))
    assert not kernel_has_qdisc("sch_netem", "netem_enqueue", kallsyms=str(syms), modules_dir=str(tmp_path / "x"))
