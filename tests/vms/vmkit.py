"""What the VM tier's tests share: the host's namespaces, the root-and-tools precondition, one VM lab run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def require_root_and_vm_tools(what: str) -> None:
    """Skip, with the reason, where ``what`` (a script that makes a namespace and runs libvirtd) cannot run."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what} makes a network namespace and runs libvirtd")
    for tool in ("vagrant", "libvirtd", "qemu-system-x86_64"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed: scripts/vagrant-setup.sh installs the VM packages")


def run_vm_script(argv: list[str], *, what: str, timeout_s: float, env: dict[str, str] | None = None) -> str:
    """``bash argv`` (a VM lab script run whole): its stderr, its tail printed; the test fails unless it passed
    (exit 77: skipped with the script's reason). Past ``timeout_s``, SIGTERM: the script's trap still tears
    everything down."""
    proc = subprocess.Popen(["bash", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, stderr = proc.communicate(timeout=180)
        pytest.fail(f"{what} took more than {timeout_s / 60:g} min; stderr tail:\n{stderr[-4000:]}")
    print(stderr[-6000:])            # the timings and figures, in the tier's log with -rA / on failure
    if proc.returncode == 77:
        pytest.skip(stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, stderr[-6000:]
    return stderr


def run_lab(dest: Path, env: dict[str, str] | None = None) -> str:
    """vagrant/lab.sh DEST (three VMs, the seed's experiment, everything destroyed): its stderr."""
    return run_vm_script([str(REPO / "vagrant" / "lab.sh"), str(dest)], what="the VM lab", timeout_s=3600, env=env)
