"""The compiled-program cache's key and its refusals, without root or bcc (kernel/progcache.py).

Loading from the cache and concurrent first runs are in tests/host/test_flow_cache.py."""

from __future__ import annotations

import json
import os

import pytest

from chaosinject.kernel import bpf_loader, progcache


@pytest.fixture
def tree(tmp_path, monkeypatch):
    headers = tmp_path / "headers"
    (headers / "include/generated").mkdir(parents=True)
    (headers / "include/generated/autoconf.h").write_text("#define CONFIG_X 1\n")
    monkeypatch.setattr(progcache, "ensure_bcc_kernel_source", lambda: headers)
    monkeypatch.setattr(progcache, "CACHE_ROOT", tmp_path / "cache")
    src = tmp_path / "prog.bpf.c"
    src.write_text("int f(void *ctx) { return 0; }\n")
    inc = tmp_path / "include"
    inc.mkdir()
    (inc / "abi.h").write_text("struct x { int a; };\n")
    return src, inc, headers


KERNEL = {"release": "6.18.44", "version": "#1", "machine": "x86_64", "btf": "ab" * 32}


def key_of(src, inc, cflags=("-DA=1",), kernel=KERNEL):
    return progcache.cache_key(src, inc, list(cflags), ["f"], kernel=dict(kernel))[0]


def spec(key: str) -> bpf_loader.ProgramSpec:
    return bpf_loader.ProgramSpec(key=key, license="GPL",
                                 maps=(bpf_loader.MapSpec("m", 2, 4, 8, 1, 0),),
                                 functions=(bpf_loader.FunctionSpec("f", bytes(16), ((0, "m"),)),
                                            bpf_loader.FunctionSpec("t", bytes(8), (),
                                                                   bpf_loader.BPF_PROG_TYPE_RAW_TRACEPOINT)))


def test_key_changes_with_every_input(tree):
    src, inc, headers = tree
    base = key_of(src, inc)
    assert key_of(src, inc) == base
    assert key_of(src, inc, cflags=("-DA=2",)) != base
    assert key_of(src, inc, kernel={**KERNEL, "release": "6.19.0"}) != base
    assert key_of(src, inc, kernel={**KERNEL, "btf": "cd" * 32}) != base
    src.write_text(src.read_text() + "// edited\n")
    edited_source = key_of(src, inc)
    assert edited_source != base
    (inc / "abi.h").write_text("struct x { long a; };\n")
    assert key_of(src, inc) != edited_source
    before_headers = key_of(src, inc)
    (headers / "include/generated/autoconf.h").write_text("#define CONFIG_X 2\n")
    assert key_of(src, inc) != before_headers


def test_round_trip_and_refusals(tree):
    src, inc, _ = tree
    key = key_of(src, inc)
    progcache.write_cached(spec(key))
    path = progcache.cache_path(key)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert progcache.read_cached(key) == spec(key)  # each function keeps its program type
    # an old source's file put under the new key's name: its recorded key differs
    src.write_text(src.read_text() + "// v2\n")
    new_key = key_of(src, inc)
    path.rename(progcache.cache_path(new_key))
    assert progcache.read_cached(new_key) is None
    assert progcache.read_cached(key) is None  # and nothing is left under the old name
    # tampered payload: digest fails
    progcache.write_cached(spec(new_key))
    data = json.loads(progcache.cache_path(new_key).read_text())
    data["functions"][0]["relocations"] = []
    progcache.cache_path(new_key).write_text(json.dumps(data))
    assert progcache.read_cached(new_key) is None
    # writable by others: refused
    progcache.write_cached(spec(new_key))
    assert progcache.read_cached(new_key) is not None
    os.chmod(progcache.cache_path(new_key), 0o646)
    assert progcache.read_cached(new_key) is None
    # not JSON at all: refused, no exception
    progcache.cache_path(new_key).write_text("{torn")
    os.chmod(progcache.cache_path(new_key), 0o644)
    assert progcache.read_cached(new_key) is None


def test_no_temporary_files_left_by_writes(tree):
    src, inc, _ = tree
    key = key_of(src, inc)
    for _ in range(3):
        progcache.write_cached(spec(key))
    assert [p.name for p in progcache.CACHE_ROOT.iterdir()] == [f"{key}.json"]

