"""The real ``chaos run`` (chaostoolkit, dev extra) with our control, chaosinject.network.controls: the extension's
built-in load records request samples against a loopback HTTP server of this test, the ``verdict`` block judges
them, and the journal chaos writes carries the verdict and the run directory (no root: the method is a sleep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHAOS = Path(sys.executable).parent / "chaos"


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    t.join(5)


def _experiment(url: str, run_dir: Path, verdict: dict) -> dict:
    return {
        "title": "control under chaos run", "description": "record and verdict through our control",
        "controls": [{"name": "chaos-inject", "provider": {"type": "python", "module": "chaosinject.network.controls",
                                                           "arguments": {"run_dir": str(run_dir)}}}],
        "steady-state-hypothesis": {"title": "always", "probes": []},
        "method": [{"type": "action", "name": "hold",
                    "provider": {"type": "process", "path": "sleep", "arguments": "1.5"}}],
        "extensions": [{"name": "chaos-inject", "recovery": "1.5s", "halt": {"enabled": False},
                        "load": {"url": url, "rate": 40, "timeout": "2s"}, "verdict": verdict}],
    }


def _chaos_run(tmp_path: Path, exp: dict) -> tuple[subprocess.CompletedProcess, dict]:
    path, journal = tmp_path / "experiment.json", tmp_path / "journal.json"
    path.write_text(json.dumps(exp))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CHAOS_INJECT_RUN_DIR"] = str(tmp_path / "run-root")
    r = subprocess.run([str(CHAOS), "--no-version-check", "run", "--no-validation", "--journal-path", str(journal),
                        str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    return r, json.loads(journal.read_text())


@pytest.fixture
def chaos():
    pytest.importorskip("chaoslib", reason="chaostoolkit is not installed (pip install -e .[dev])")
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed beside this interpreter ({CHAOS})")


# error rate only (latency on a loaded machine is not this test's question); 40 requests/s for >= 1.5 s a phase
ERRORS_ONLY = {"max_error_rate": "20%", "latency_max": None, "latency_max_ratio": None,
               "error_rate_vs_baseline": False}


def test_chaos_run_journal_carries_the_verdict_and_the_run_directory(chaos, server, tmp_path):
    run_dir = tmp_path / "run"
    r, journal = _chaos_run(tmp_path, _experiment(server, run_dir, ERRORS_ONLY))
    ci = journal.get("chaos-inject")
    assert ci, r.stdout + r.stderr
    assert ci["run_dir"] == str(run_dir.resolve()) and ci["control"] == "chaosinject.network.controls"
    assert ci["verdict"] == "held", (ci.get("verdict_phases"), r.stderr[-2000:])
    assert set(ci["verdict_phases"]) == {"baseline", "fault", "recovery"}
    assert r.returncode == 0 and journal["status"] == "completed" and journal["deviated"] is False, r.stderr[-2000:]
    written = json.loads((run_dir / "journal.json").read_text())
    assert written["chaos-inject"]["verdict"] == "held"
    assert json.loads((run_dir / "verdict.json").read_text())["outcome"] == "held"
    assert (run_dir / "report.md").exists() and any((run_dir / "samples").glob("request-*.parquet"))


def test_a_verdict_that_does_not_hold_deviates_the_chaos_run(chaos, server, tmp_path):
    _Handler.status = 500     # every request an error: the samples violate a 20 % error-rate limit
    try:
        r, journal = _chaos_run(tmp_path, _experiment(server, tmp_path / "run", ERRORS_ONLY))
    finally:
        _Handler.status = 200
    ci = journal["chaos-inject"]
    assert ci["verdict"] == "violated", (ci.get("verdict_phases"), r.stderr[-2000:])
    assert journal["deviated"] is True and r.returncode == 1, r.stderr[-2000:]
