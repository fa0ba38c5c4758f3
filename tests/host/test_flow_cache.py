"""The classifier's flow cache and the compiled-program cache, driven with BPF_PROG_TEST_RUN (no traffic).

Flow cache: a flow whose verdict is cached must still see a rule's removal, expiry, renewal and a more specific
rule added later; loss is still drawn per packet. Program cache: a second process loads without bcc, a cached
file for another source or kernel is never used, two concurrent first runs leave one valid file, and `sweep` /
`status` neither touch nor report the cache.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosinject.engines.rules import compile_rules
from chaosinject.kernel import abi, bpf_loader, progcache
from chaosinject.kernel.bpf import ClassifierConfig, ClassifierProgram, prog_test_run
from chaosinject.plan import Interface, PlannedRule, RuleMatch
from chaosinject.spec import FaultSpec

TC_ACT_UNSPEC, TC_ACT_STOLEN = -1, 4
SRC, DST, PORT = "10.198.9.1", "10.198.9.2", 7000
FAR = 2**63


def frame(src: str = SRC, dst: str = DST, sport: int = 40000, dport: int = PORT) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + 16, 0) + b"x" * 16
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp


def rules_for(matches: list[RuleMatch], fault: FaultSpec, expires_ns: int = FAR):
    planned = [PlannedRule(rule_id=i, flow="test", interface=Interface("t0"), match=m) for i, m in enumerate(matches)]
    return compile_rules(planned, fault, expires_ns)


def exact(dport: int = PORT) -> RuleMatch:
    return RuleMatch("egress", 4, 17, ipaddress.ip_network(f"{SRC}/32"), ipaddress.ip_network(f"{DST}/32"),
                     None, dport)


def wide() -> RuleMatch:  # any source, the destination's /24, any port: a second, less specific shape
    return RuleMatch("egress", 4, 17, None, ipaddress.ip_network("10.198.9.0/24"), None, None)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("progcache")  # one compile for the flow-cache tests, maps fresh per test


@pytest.fixture
def program(module_cache, monkeypatch):
    monkeypatch.setattr(progcache, "CACHE_ROOT", module_cache)
    prog = ClassifierProgram(ClassifierConfig(max_rules=64, flow_cache=True))
    yield prog
    prog.close()


def run(prog: ClassifierProgram, packet: bytes = None, repeat: int = 1) -> int:
    return prog_test_run(prog.prog_fds["egress"], packet or frame(), repeat).retval


def test_cached_flow_sees_removal_and_new_rules(program):
    shapes, entries = rules_for([exact()], FaultSpec(partition=True))
    program.set_shapes(shapes)
    assert run(program) == TC_ACT_UNSPEC           # no rule yet: the "no match" verdict is cached
    assert program.cached_flows() == 1
    program.put_rules(entries)
    assert run(program) == TC_ACT_STOLEN           # the new rule is seen at once (generation bumped)
    assert run(program, repeat=100) == TC_ACT_STOLEN
    program.delete_rule(entries[0][0])
    assert run(program) == TC_ACT_UNSPEC           # removed: the cached flow passes again
    assert program.counters(0)["dropped_packets"] == 101


def test_cached_flow_sees_expiry_and_renewal(program):
    shapes, entries = rules_for([exact()], FaultSpec(partition=True))
    program.set_shapes(shapes)
    program.put_rules(entries)
    assert run(program, repeat=10) == TC_ACT_STOLEN
    for _, rule in entries:
        rule.expires_ns = time.monotonic_ns() - 1   # the lease ran out (what a dead injector leaves)
    program.refresh_rules(entries)                  # values only: no generation bump, the verdict stays cached
    assert run(program) == TC_ACT_UNSPEC
    assert program.counters(0)["expired_packets"] == 1
    for _, rule in entries:
        rule.expires_ns = FAR
    program.refresh_rules(entries)
    assert run(program) == TC_ACT_STOLEN
    assert program.cached_flows() == 1


def test_more_specific_rule_added_later_wins_on_a_cached_flow(program):
    shapes, entries = rules_for([exact(), wide()], FaultSpec(partition=True))
    specific_id = next(rule.id for key, rule in entries if key.sport == 0 and key.dport)
    program.set_shapes(shapes)
    program.put_rules([e for e in entries if e[1].id != specific_id])   # only the wide rule
    assert run(program, repeat=5) == TC_ACT_STOLEN
    partition_specific = [e for e in entries if e[1].id == specific_id]
    partition_specific[0][1].flags = 0                                  # the specific rule lets packets pass
    program.put_rules(partition_specific)
    assert run(program, repeat=5) == TC_ACT_UNSPEC
    assert program.counters(specific_id)["matched_packets"] == 5


def test_loss_is_still_drawn_per_packet(program):
    shapes, entries = rules_for([exact()], FaultSpec(loss_ratio=0.5))
    program.set_shapes(shapes)
    program.put_rules(entries)
    run(program, repeat=20000)
    counters = program.counters(0)
    assert counters["matched_packets"] == 20000
    # binomial(20000, 0.5): sd ~71; +-6 sd
    assert abs(counters["dropped_packets"] - 10000) < 430, counters


def test_untargeted_flows_are_cached_as_pass(program):
    shapes, entries = rules_for([exact()], FaultSpec(partition=True))
    program.set_shapes(shapes)
    program.put_rules(entries)
    for port in range(5):
        assert run(program, frame(dport=9000 + port)) == TC_ACT_UNSPEC
    assert program.cached_flows() == 5


# -- the compiled-program cache ---------------------------------------------------------------------------------
LOAD = """
import json, sys, time
t = time.perf_counter()
from chaosinject.kernel.bpf import ClassifierConfig, ClassifierProgram
p = ClassifierProgram(ClassifierConfig(max_rules=64))
print(json.dumps({"bcc": "bcc" in sys.modules, "s": time.perf_counter() - t}))
p.close()
"""


def load_in_process(cache: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "CHAOS_INJECT_PROG_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-c", LOAD], env=env, stdout=subprocess.PIPE, text=True, **popen)


def test_second_process_loads_from_the_cache_without_bcc(tmp_path):
    cache = tmp_path / "cache"
    first = json.loads(load_in_process(cache).communicate(timeout=120)[0])
    second = json.loads(load_in_process(cache).communicate(timeout=120)[0])
    assert first["bcc"] and not second["bcc"]
    files = [p for p in cache.glob("*.json") if p.name != "kernel-identity.json"]
    assert len(files) == 1


def test_concurrent_first_runs_leave_one_valid_file(tmp_path):
    cache = tmp_path / "cache"
    procs = [load_in_process(cache) for _ in range(3)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs) and len(outs) == 3
    names = sorted(p.name for p in cache.iterdir())
    assert [n for n in names if ".tmp" in n] == []          # no torn or abandoned temporary file
    files = [cache / n for n in names if n != "kernel-identity.json"]
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["key"] == files[0].stem  # the recorded key is the file's name
    assert bpf_loader.ProgramSpec.from_json(data).functions  # whole and readable
    third = json.loads(load_in_process(cache).communicate(timeout=120)[0])
    assert not third["bcc"]


def test_cache_of_another_source_or_kernel_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(progcache, "CACHE_ROOT", tmp_path / "cache")
    prog = ClassifierProgram(ClassifierConfig(max_rules=64))
    prog.close()
    (cached,) = [p for p in (tmp_path / "cache").glob("*.json") if p.name != "kernel-identity.json"]
    cflags = ClassifierConfig(max_rules=64).cflags()
    functions = ["ci_egress", "ci_ingress", "ci_ifb", "ci_ingress_match"]
    key, fields = progcache.cache_key(abi.BPF_DIR / "classifier.bpf.c", abi.INCLUDE_DIR, cflags, functions)
    assert key == cached.stem
    # another kernel: another key, and no file for it
    other_kernel = {**fields["kernel"], "release": fields["kernel"]["release"] + "-other"}
    key2, _ = progcache.cache_key(abi.BPF_DIR / "classifier.bpf.c", abi.INCLUDE_DIR, cflags, functions,
                                  kernel=other_kernel)
    assert key2 != key and progcache.read_cached(key2) is None
    # another source (one changed byte): another key
    src = tmp_path / "classifier.bpf.c"
    shutil.copy(abi.BPF_DIR / "classifier.bpf.c", src)
    src.write_text(src.read_text() + "\n/* changed */\n")
    key3, _ = progcache.cache_key(src, abi.INCLUDE_DIR, cflags, functions)
    assert key3 != key
    # an old file put under the new key's name is refused (its recorded key differs)
    shutil.copy(cached, progcache.cache_path(key3))
    assert progcache.read_cached(key3) is None
    # a tampered payload is refused; a file others may write is refused
    data = json.loads(cached.read_text())
    data["functions"][0]["insns"] = data["functions"][1]["insns"]
    tampered = progcache.cache_path("0" * 64)
    tampered.write_text(json.dumps({**data, "key": "0" * 64}))
    assert progcache.read_cached("0" * 64) is None
    os.chmod(cached, 0o666)
    assert progcache.read_cached(key) is None
    os.chmod(cached, 0o644)
    assert progcache.read_cached(key) is not None


def test_sweep_and_status_neither_touch_nor_report_the_cache(tmp_path):
    cache = tmp_path / "cache"
    assert load_in_process(cache).wait(timeout=120) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir())
    env = {**os.environ, "CHAOS_INJECT_PROG_CACHE": str(cache), "CHAOS_INJECT_RUN_DIR": str(tmp_path / "run")}
    sweep = subprocess.run([sys.executable, "-m", "chaosinject.cli", "sweep", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    status = subprocess.run([sys.executable, "-m", "chaosinject.cli", "status", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    assert status.returncode == 0, status.stderr
    assert str(cache) not in sweep.stdout and "bpf/" not in sweep.stdout
    assert str(cache) not in status.stdout
    assert sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()) == before
    assert json.loads(sweep.stdout).get("removed", []) == []
