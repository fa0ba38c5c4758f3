"""`lab up` loads the kernel modules its links need, or says which one it cannot have (before anything is made)."""

from __future__ import annotations

import pytest

from chaosinject.errors import Unsupported
from chaosinject.lab.preflight import ensure_modules


def _modprobe(tmp_path, *, fails: bool):
    """A modprobe that records its argument (and makes /sys/module/<mod> appear), or fails like the real one."""
    script = tmp_path / "bin" / "modprobe"
    script.parent.mkdir()
    body = ('echo "modprobe: FATAL: Module $1 not found" >&2; exit 1' if fails
            else f'echo "$1" >> {tmp_path}/calls; mkdir -p {tmp_path}/sys/"$1"')
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def dirs(tmp_path):
    (tmp_path / "sys" / "bridge").mkdir(parents=True)       # loaded already
    (tmp_path / "mods").mkdir()
    return tmp_path


def test_loads_only_what_is_neither_loaded_nor_built_in(dirs):
    (dirs / "mods" / "modules.builtin").write_text("kernel/drivers/net/dummy.ko\n")
    loaded = ensure_modules(("bridge", "veth", "dummy"), sys_module=dirs / "sys", modules_dir=dirs / "mods",
                            modprobe=_modprobe(dirs, fails=False))
    assert loaded == ["veth"] and (dirs / "calls").read_text() == "veth\n"


def test_a_module_that_cannot_be_loaded_is_named(dirs):
    with pytest.raises(Unsupported, match=r"veth \(modprobe: FATAL: Module veth not found\)"):
        ensure_modules(("bridge", "veth"), sys_module=dirs / "sys", modules_dir=dirs / "mods",
                       modprobe=_modprobe(dirs, fails=True))


def test_a_kernel_without_loadable_modules_is_left_to_its_built_ins(dirs):
    assert ensure_modules(("veth",), sys_module=dirs / "sys", modules_dir=dirs / "none",
                          modprobe=_modprobe(dirs, fails=True)) == []
