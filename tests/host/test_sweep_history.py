"""kill -9 of a detached supervisor or a foreground CLI run: `sweep` removes what it left and records its final
state (failed, "owner died; swept") in the history, which `status` shows."""

from __future__ import annotations

import json
import os
import signal

from .conftest import our_filters, qdiscs
from .test_detach import CLI, cli, delivered, env, flow_of, status, wait_gone, wait_running


def _swept_and_recorded(pair, run_dir, run_id: str, kind: str) -> None:
    (dead,) = status(run_dir)
    assert dead["state"] == "dead" and dead["run_id"] == run_id
    swept = cli(run_dir, "sweep")
    assert swept.returncode == 0, swept.stderr
    assert "swept 1 dead run" in swept.stdout and f"recorded as failed (owner died; swept): {run_id}" in swept.stdout
    assert not our_filters(pair.client_iface) and "clsact" not in qdiscs(pair.client_iface)
    (final,) = [r for r in status(run_dir, "--recent", "5") if r["run_id"] == run_id]
    assert final["finished"] and final["state"] == "failed" and final["kind"] == kind
    assert final["status"]["error"] == "owner died; swept" and final["status"]["last_state"] == "running"
    assert final["status"]["flows"] == [flow_of(pair)]
    text = cli(run_dir, "status").stdout
    assert run_id in text and "failed" in text and "(owner died; swept)" in text
    again = cli(run_dir, "sweep")  # nothing more to do, and the history entry is not written twice
    assert again.returncode == 0 and "swept 0 dead run" in again.stdout
    assert [r["run_id"] for r in status(run_dir, "--recent", "5")].count(run_id) == 1


def test_kill_9_of_a_detached_supervisor_is_recorded_by_sweep(pair, run_dir):
    result = cli(run_dir, "--flow", flow_of(pair), "--netns", pair.client_ns, "--partition", "--duration", "120s",
                 "--lease", "1s", "--detach", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert delivered(pair) == 0
    os.kill(info["pid"], signal.SIGKILL)  # the supervisor we started (its pid from our own run's output)
    assert wait_gone(info["pid"])
    _swept_and_recorded(pair, run_dir, info["run_id"], "detached")


def test_kill_9_of_a_foreground_cli_run_is_recorded_by_sweep(pair, run_dir):
    import subprocess

    proc = subprocess.Popen([*CLI, "--flow", flow_of(pair), "--netns", pair.client_ns, "--partition",
                             "--duration", "120s", "--lease", "1s", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(run_dir))
    try:
        run_id = wait_running(run_dir, proc)["run_id"]
        assert delivered(pair) == 0
    finally:
        proc.kill()
        proc.communicate()
    kind = status(run_dir)[0]["kind"]
    _swept_and_recorded(pair, run_dir, run_id, kind)
