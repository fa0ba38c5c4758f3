"""How long the lab's api is down under the seed's pod-kill, and what `chaos-inject lab restart api` costs.

    sudo .venv/bin/python bench/lab_restart.py [--cycles 5]

One lab (a prefix, subnet and state directory of its own) serves every cycle. Per cycle: kill_hosts(["api"],
"pod-kill") as the translated PodChaos calls it (the lab inventory's restart command brings the api back), timed
until /health answers 200 again; then `chaos-inject lab restart api` through the CLI on the running api, timed
to its exit (it exits once the new api serves). Prints medians; the lab is taken down and checked empty.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from chaosinject.experiment.hostactions import kill_hosts  # noqa: E402
from chaosinject.lab import LabSpec, lab_down, lab_status, lab_up  # noqa: E402
from chaosinject.httpclient import get as http_get  # noqa: E402
from chaosinject.lab.netlab import lab_leftovers, restart_command  # noqa: E402
from chaosinject.lab.preflight import free_subnet  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    C.begin("lab_restart", why="the netns lab")
    spec = LabSpec(prefix="cibr" + secrets.token_hex(2), subnet=free_subnet("10.214"),
                   state_dir=Path("/run/chaos-inject") / f"lab-bench-{secrets.token_hex(3)}")
    os.environ["CHAOS_INJECT_INVENTORY"] = str(spec.state_dir / "inventory.toml")
    down_s, kill_return_s, cli_s = [], [], []
    try:
        info = lab_up(spec)
        for _ in range(args.cycles):
            down = C.Stopwatch()
            out = kill_hosts(["api"], "pod-kill")
            kill_return_s.append(down.s)
            assert out["hosts"][0]["restarted"], out
            while http_get(f"{info.api_url}/health", timeout_s=1).status != 200:
                if down.s > 30:
                    raise SystemExit("api not back after 30 s")
                time.sleep(0.01)
            down_s.append(down.s)
            while not lab_status(spec).up:      # state.json records the new api before the next kill
                time.sleep(0.05)
            cli_s.append(C.timed(lambda: subprocess.run(["/bin/sh", "-c", restart_command(spec, "api")], check=True,
                                                        capture_output=True)))
            reply = http_get(f"{info.api_url}/health", timeout_s=1)
            assert reply.status == 200, reply
    finally:
        lab_down(spec)
    left = lab_leftovers(spec)
    print(f"cycles {args.cycles}, median (min-max): pod-kill -> /health 200 again {C.fmt(down_s, ' s')}; "
          f"kill_hosts returned after {C.fmt(kill_return_s, ' s')}; `lab restart api` (running api, CLI to exit) "
          f"{C.fmt(cli_s, ' s')}; left behind: {left or 'nothing'}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
