"""A fault held by a child process, as the CLI holds one: its own process and GIL, so the measuring threads of a
test or benchmark do not disturb the engine's timing (nor it theirs).

    python tests/host/engine_process.py SPEC_JSON

SPEC: ``netns`` and ``ifname`` (where), ``targets`` (a list of ``{"flow": "SRC->DST:PORT/udp", "fault":
FaultSpec keyword arguments}``), optional ``engine`` (default: userspace), ``direction``, ``seed``. The child
applies the plan, prints ``ready RUN_ID LOAD_S``, holds until its stdin closes (or SIGTERM), then its owner undoes
everything and it prints the engine's counters as JSON. ``EngineProcess`` runs it. A test helper (the host tier's
test_userspace_delay.py and bench/delay_engines.py use it; nothing shipped does): the child runs this file by its
path, so it needs no package of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def _child(spec: dict) -> int:
    from chaosinject.engines.select import make_engine
    from chaosinject.errors import Interrupted
    from chaosinject.kernel.owner import KernelOwner
    from chaosinject.plan import Interface, build_plan
    from chaosinject.spec import FaultSpec, parse_flow

    iface = Interface(spec["ifname"], spec["netns"])
    targets = [(parse_flow(t["flow"]), iface, FaultSpec(**t["fault"])) for t in spec["targets"]]
    plan = build_plan(targets, direction=spec.get("direction", "egress"), duration_ns=3600 * 10**9,
                      seed=spec.get("seed"), engine=spec.get("engine", "userspace"))
    engine = make_engine(spec.get("engine", "userspace"))
    counters: dict = {}
    started = time.monotonic()
    try:
        with KernelOwner(plan.run_id, meta=plan.to_dict()) as owner:
            engine.apply(plan, owner, time.monotonic_ns() + plan.duration_ns)
            print(f"ready {plan.run_id} {time.monotonic() - started:.3f}", flush=True)
            try:
                sys.stdin.read()
            finally:
                counters = {str(k): v for k, v in engine.counters().items()}
    except Interrupted:
        pass
    print(json.dumps(counters), flush=True)
    return 0


class EngineProcess:
    """The child, started and applied (``run_id``, ``load_s``: how long applying took); ``stop()`` ends it
    normally and returns the counters by rule ("0", "1", ...); ``kill()`` is for a failed test (sweep after)."""

    def __init__(self, spec: dict, *, run_dir: str | os.PathLike | None = None) -> None:
        env = dict(os.environ)   # sys.executable finds the installed chaosinject (editable or wheel)
        if run_dir is not None:
            env["CHAOS_INJECT_RUN_DIR"] = str(run_dir)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            self.kill()
            raise RuntimeError(f"the engine did not start: {line} {self.proc.stderr.read()[-2000:]}")
        self.run_id, self.load_s = line[1], float(line[2])

    def stop(self, timeout_s: float = 60.0) -> dict:
        out, err = self.proc.communicate(input="", timeout=timeout_s)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the engine exited {self.proc.returncode}: {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
