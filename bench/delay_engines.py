"""Requested vs achieved added delay per engine (netem, edt, userspace): 1 ms, 10 ms, 100 ms, side by side.

Per engine: two throwaway namespaces joined by a veth (10.197.<k>.0/30, fd00:197:<k>::/64), a baseline one-way
latency without any fault, then the engine applied once (in a child process, as the CLI runs it: its own process
and GIL) to one UDP flow per requested delay (ports 9001, 9002, ... each with its own delay), and each flow
measured in turn: N datagrams at the rate; one-way latency = the kernel's receive timestamp (SO_TIMESTAMPNS) - the
send stamp taken just before sendto (both CLOCK_REALTIME of one machine; namespaces share it). Not the time a Python
receiver thread got to the datagram: under TCG that thread falls tens of ms behind at 2,000 packets/s.
error = latency - baseline median - requested. Prints median / p99 / p1 of the error (us) and the
datagrams lost. Engines this kernel cannot run are reported as "not available here" (with what they miss).

    sudo .venv/bin/python bench/delay_engines.py [--engines netem,edt,userspace] [--delays 1ms,10ms,100ms]
                                                 [--rate 2000] [--count 2000] [--json OUT]
    sudo .venv/bin/python bench/delay_engines.py --vm    # netem + edt in the 6.1 VM (scripts/vm/run.sh),
                                                         # userspace on this host, one table

Everything is removed on every exit path: the engine child is told to stop (closing its stdin; its KernelOwner
undoes the engine), killed if it does not, and then `sweep()` removes what a killed child left; the namespaces
(veths, qdiscs, filters with them) by Topology.close(). SIGTERM/SIGHUP become SystemExit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO = C.REPO

from tests.host.engine_process import EngineProcess  # noqa: E402  (a test helper: the engine in a child)

BASE_PORT = 9001
SUBNET_INDEX = {"netem": 1, "edt": 2, "userspace": 3}
ENGINES = ("netem", "edt", "userspace")


# -- traffic: chaosinject.lab.traffic.measure_one_way (SO_TIMESTAMPNS arrival - send stamp) -------------------
def measure(client_ns: str, server_ns: str, dst: str, port: int, count: int, rate: float,
            drain_s: float = 0.4) -> tuple[list[int], float]:
    from chaosinject.lab.traffic import measure_one_way

    got = measure_one_way(client_ns, server_ns, dst, port, count, rate, drain_s=drain_s)
    return got.latencies_ns, got.send_rate


def where_label() -> str:
    release = platform.release()
    short = ".".join(release.split(".")[:2])
    if os.environ.get("CHAOS_INJECT_VM") == "1":
        return f"VM ? {short}"  # the --vm driver fills in the accelerator run.sh chose
    return f"host {short}"


def run_engine(name: str, delays: list[int], count: int, rate: float, run_dir: str) -> list[dict]:
    from chaosinject.engines.select import engine_info
    from chaosinject.kernel.netns import Topology, unique_name
    from chaosinject.kernel.probe import probe
    from chaosinject.kernel.sweep import sweep

    where = where_label()
    rows = [{"engine": name, "where": where, "kernel": platform.release(), "delay_ns": d, "count": count}
            for d in delays]
    missing = engine_info(name).missing(probe())
    if missing:
        for row in rows:
            row["status"] = "not available here: needs " + ", ".join(missing)
        return rows
    k = SUBNET_INDEX[name]
    topo = Topology()
    engine: EngineProcess | None = None
    spawned = False
    try:
        client_ns = topo.add_namespace(unique_name(f"ci-bd-{name[:4]}-a"))
        server_ns = topo.add_namespace(unique_name(f"ci-bd-{name[:4]}-b"))
        client, server = topo.connect(client_ns, server_ns, f"10.197.{k}.0/30", f"fd00:197:{k}::/64")
        src, dst = str(client.ipv4.ip), str(server.ipv4.ip)
        measure(client_ns, server_ns, dst, BASE_PORT, min(200, count), rate)  # warm-up: ARP, caches
        base, _ = measure(client_ns, server_ns, dst, BASE_PORT, count, rate)
        base_med = C.median(base) if base else 0.0
        base_p99 = C.percentile(base, 99) if base else 0.0
        spawned = True  # from here on, a child that dies half-way may leave state: sweep it on the way out
        engine = EngineProcess({"engine": name, "netns": client_ns, "ifname": client.ifname, "targets": [
            {"flow": f"{src}->{dst}:{BASE_PORT + i}/udp", "fault": {"delay_ns": d}} for i, d in enumerate(delays)]},
            run_dir=run_dir)
        print(f"# {name} on {where}: engine applied in {engine.load_s:.1f} s; baseline one-way median "
              f"{base_med / 1e3:.1f} us, p99 {base_p99 / 1e3:.1f} us ({len(base)}/{count})", file=sys.stderr,
              flush=True)
        for i, (delay_ns, row) in enumerate(zip(delays, rows)):
            # the receiver drains long enough for packets still held by the engine to land
            lat, sent_rate = measure(client_ns, server_ns, dst, BASE_PORT + i, count, rate,
                                     drain_s=0.4 + 3 * delay_ns / 1e9)
            errors = [x - base_med - delay_ns for x in lat]
            row.update(status="ok", received=len(lat), lost=count - len(lat), send_rate=sent_rate,
                       base_med_ns=base_med, base_p99_ns=base_p99, load_s=engine.load_s)
            if errors:
                row.update(err_med_ns=C.median(errors), err_p99_ns=C.percentile(errors, 99),
                           err_p1_ns=C.percentile(errors, 1))
        counters = engine.stop()
        engine, spawned = None, False  # stopped cleanly: its owner undid everything
        for row, rule in zip(rows, sorted(counters, key=int)):
            row["engine_counters"] = counters[rule]
        return rows
    except Exception as exc:  # one engine failing must not hide the others' figures
        for row in rows:
            row.setdefault("status", f"failed: {type(exc).__name__}: {exc}"[:300])
        print(f"# {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return rows
    finally:
        if engine is not None:
            engine.kill()
        if spawned:
            os.environ["CHAOS_INJECT_RUN_DIR"] = run_dir  # our private run dir: only our own runs are swept
            sweep()  # what a killed (or failed) engine child left behind
        topo.close()


# -- the table -----------------------------------------------------------------------------------------------
def table(rows: list[dict], rate: float, count: int) -> str:
    out = [f"requested vs achieved added delay, UDP one-way, {rate:.0f} packets/s requested, {count} packets per "
           "row; error = latency - baseline median - requested, in us",
           f"{'engine':<10s} {'where':<14s} {'requested':>9s} {'err median':>11s} {'err p99':>10s} {'err p1':>10s} "
           f"{'lost':>6s} {'sent pps':>8s} {'baseline med':>12s} {'goal':>5s}"]
    for r in rows:
        req = f"{r['delay_ns'] / 1e6:g}ms"
        if r.get("status") != "ok" or "err_med_ns" not in r:
            out.append(f"{r['engine']:<10s} {r['where']:<14s} {req:>9s}  {r.get('status', '?')}")
            continue
        goal = "ok" if abs(r["err_med_ns"]) <= 25_000 and r["err_p99_ns"] <= 100_000 else "no"
        out.append(f"{r['engine']:<10s} {r['where']:<14s} {req:>9s} {r['err_med_ns'] / 1e3:>+11.1f} "
                   f"{r['err_p99_ns'] / 1e3:>+10.1f} {r['err_p1_ns'] / 1e3:>+10.1f} {r['lost']:>6d} "
                   f"{r['send_rate']:>8.0f} {r['base_med_ns'] / 1e3:>10.1f}us {goal:>5s}")
    out.append("goal (real kernel): |median| <= 25 us, p99 <= 100 us")
    return "\n".join(out)


def run_vm_part(engines: list[str], args) -> list[dict]:
    out = REPO / ".cache" / "bench" / f"delay_engines-{os.getpid()}-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    python = REPO / ".venv" / "bin" / "python"
    cmd = ["bash", str(REPO / "scripts" / "vm" / "run.sh"), args.vm_series, "--", str(python if python.exists()
           else sys.executable), "bench/delay_engines.py", "--engines", ",".join(engines), "--delays", args.delays,
           "--rate", str(args.rate), "--count", str(args.count), "--json", str(out)]
    accel = "?"
    env = {**os.environ, "VM_TIMEOUT": os.environ.get("VM_TIMEOUT", "600")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(REPO), env=env)
    try:
        for line in proc.stdout:
            sys.stderr.write("  | " + line)
            m = re.search(r"booting \S+ \((\w+),", line)
            if m:
                accel = m.group(1).upper()
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # run.sh kills its QEMU on its own exit (EXIT trap)
            proc.terminate()
            proc.wait(timeout=30)
    try:
        rows = json.loads(out.read_text()) if out.exists() else []
    finally:
        out.unlink(missing_ok=True)
    if not rows:
        return [{"engine": e, "where": f"VM {args.vm_series}", "delay_ns": d, "count": args.count,
                 "status": f"VM run failed (run.sh exit {rc})"} for e in engines for d in parse_delays(args.delays)]
    for row in rows:
        row["where"] = row["where"].replace("VM ?", f"VM {accel}")
    return rows


def parse_delays(text: str) -> list[int]:
    from chaosinject.spec.units import parse_duration_ns

    return [parse_duration_ns(item) for item in text.split(",") if item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma list of netem,edt,userspace")
    parser.add_argument("--delays", default="1ms,10ms,100ms")
    parser.add_argument("--rate", type=float, default=2000.0, help="packets per second (default 2000)")
    parser.add_argument("--count", type=int, default=2000, help="packets per delay (default 2000)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--vm", action="store_true",
                        help="netem and edt inside the VM (scripts/vm/run.sh), userspace on this host, one table")
    parser.add_argument("--vm-series", default="6.1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = C.begin("delay_engines", why="network namespaces, tc, BPF, nftables")
    sys.setswitchinterval(0.0002)
    import gc

    gc.freeze()

    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            sys.exit(f"unknown engine {e!r}: one of {', '.join(ENGINES)}")
    delays = parse_delays(args.delays)
    rows: list[dict] = []
    if args.vm:
        in_vm = [e for e in engines if e in ("netem", "edt")]
        if in_vm:
            rows += run_vm_part(in_vm, args)
        engines = [e for e in engines if e not in in_vm]
    run_dir = tempfile.mkdtemp(prefix="chaos-bench-")
    try:
        for name in engines:
            rows += run_engine(name, delays, args.count, args.rate, run_dir)
    finally:
        for leftover in sorted(Path(run_dir).rglob("*"), reverse=True):
            leftover.unlink() if leftover.is_file() else leftover.rmdir()
        os.rmdir(run_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows, args.rate, args.count))
    if not (os.environ.get("CHAOS_INJECT_VM") == "1" and args.json):  # in the VM: the --vm driver's table
        print(f"(total {started.s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
