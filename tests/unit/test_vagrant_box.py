"""The local Vagrant box builder's pure parts (no root, nothing built): the inputs hash that names the cached box,
its metadata, its package list against what provisioning installs, and the Vagrantfiles' syntax."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOX = REPO / "vagrant" / "box"
INPUTS = ("build.sh", "customize.sh", "packages.txt", "Vagrantfile.box")


def run(box_dir: Path, *args: str) -> str:
    out = subprocess.run(["bash", str(box_dir / "build.sh"), *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def copy_box(tmp_path: Path) -> Path:
    d = tmp_path / "box"
    shutil.copytree(BOX, d)
    return d


def test_inputs_hash_is_stable_and_does_not_depend_on_the_folder(tmp_path):
    h = run(BOX, "--inputs-hash")
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert run(BOX, "--inputs-hash") == h
    assert run(copy_box(tmp_path), "--inputs-hash") == h


@pytest.mark.parametrize("name", INPUTS)
def test_each_input_changes_the_hash(tmp_path, name):
    d = copy_box(tmp_path)
    before = run(d, "--inputs-hash")
    with open(d / name, "a") as f:
        f.write("\n# changed\n")
    assert run(d, "--inputs-hash") != before


def test_other_files_do_not_change_the_hash(tmp_path):
    d = copy_box(tmp_path)
    before = run(d, "--inputs-hash")
    (d / "notes.txt").write_text("not an input\n")
    assert run(d, "--inputs-hash") == before


def test_metadata_is_a_libvirt_qcow2_box():
    meta = json.loads(run(BOX, "--metadata"))
    assert meta["provider"] == "libvirt" and meta["format"] == "qcow2"
    assert isinstance(meta["virtual_size"], int) and meta["virtual_size"] >= 4
    assert run(BOX, "--box-name") == "chaos-inject/debian12"


def packages() -> set[str]:
    lines = (line.split("#")[0].strip() for line in (BOX / "packages.txt").read_text().splitlines())
    return {line for line in lines if line}


def test_box_has_the_stock_kernel_login_and_what_provisioning_installs():
    pk = packages()
    assert {"linux-image-amd64", "openssh-server", "sudo", "python3", "iproute2"} <= pk
    common = (REPO / "vagrant" / "provision" / "common.sh").read_text()
    m = re.search(r"^pkgs=\(([^)]*)\)", common, re.M)
    assert m, "common.sh's pkgs=(...) list not found"
    wanted = set(m.group(1).split())
    assert wanted and wanted <= pk, f"provisioning installs {sorted(wanted - pk)}, not in the box (no route out)"


def test_bad_argument_is_refused():
    out = subprocess.run(["bash", str(BOX / "build.sh"), "--nope"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage" in out.stderr


@pytest.mark.parametrize("path", ["vagrant/box/Vagrantfile.box", "vagrant/smoke/Vagrantfile"])
def test_vagrantfile_syntax(path):
    if not shutil.which("ruby"):
        pytest.skip("ruby missing: `sudo make setup` installs it (Debian ruby) for `ruby -c`")
    out = subprocess.run(["ruby", "-c", str(REPO / path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "Syntax OK" in out.stdout, out.stderr


def test_box_vagrantfile_boots_the_files_the_box_ships():
    vf = (BOX / "Vagrantfile.box").read_text()
    build = (BOX / "build.sh").read_text()
    tar = re.search(r"tar -cf \S+ ([^)]+)\)", build)
    assert tar, "build.sh's tar line not found"
    shipped = set(tar.group(1).split())
    assert {"metadata.json", "Vagrantfile", "box.img"} <= shipped
    for name in re.findall(r'File\.join\(__dir__, "([^"]+)"\)', vf):
        assert name in shipped, f"the box's Vagrantfile boots {name}, which the box does not ship"
    assert "root=/dev/vda" in vf
