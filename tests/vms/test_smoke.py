"""`make vagrant-smoke` as a test (the `vms-smoke` tier of `make test`): the local box boots under vagrant-libvirt
(QEMU TCG) inside a namespace of its own, chaos-inject from this checkout installs in it with no route out, its
netem engine delays one flow by 100 ms and not another (checked on the wire: TCP connect times), leaves nothing in
the VM, and `vagrant destroy` plus the script's teardown leave nothing on the host."""

from __future__ import annotations

from pathlib import Path

from tests.vms.vmkit import REPO, namespaces, require_root_and_vm_tools, run_vm_script


def test_vagrant_smoke_boots_checks_netem_and_leaves_nothing():
    require_root_and_vm_tools("the smoke")
    run_libvirt_before = Path("/run/libvirt").exists()
    ns_before = namespaces()
    runs = REPO / ".cache" / "vagrant-smoke"
    runs_before = set(runs.glob("run.*"))
    stderr = run_vm_script([str(REPO / "vagrant" / "smoke" / "smoke.sh")], what="the smoke", timeout_s=1800)
    assert "[vagrant-smoke] PASS" in stderr
    assert "ok: kernel" in stderr
    for check in ("install", "inject", "qdisc", "delayed", "undelayed", "stop", "exit", "restored", "filters", "pins", "after"):
        assert f"vm: check {check} ok" in stderr, check
    assert "FAIL" not in stderr
    # nothing of ours left: namespace, host /run/libvirt state, work directory, processes in our namespace
    assert {n for n in namespaces() - ns_before if n.startswith("cibox-")} == set()
    assert Path("/run/libvirt").exists() == run_libvirt_before
    assert set(runs.glob("run.*")) <= runs_before
