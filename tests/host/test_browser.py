"""A real browser (headless Chromium over the DevTools protocol) on what a person opens after a run:
JupyterLab started by `chaos-inject notebook RUN_DIR`, and an experiment's HTML report. The checks read the
rendered DOM, not the files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosinject import analysis

from .browser import Browser, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")
CLI = Path(sys.executable).with_name("chaos-inject")


def _jupyter_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "jupyter"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_notebook_command_opens_the_run_in_jupyterlab(tmp_path):
    run = tmp_path / "run"
    analysis.example_run(run, rng=2026)
    before = _jupyter_pids()
    proc = subprocess.Popen([str(CLI), "notebook", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        lines, pid = [], None
        end = time.monotonic() + 240   # copy + execute the notebook + JupyterLab start, on a loaded 2-core host
        while not any(ln.lstrip().startswith("pid ") for ln in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"exited {proc.poll()}: {proc.stderr.read()}"
            lines.append(line)
            assert time.monotonic() < end, lines
        url = next(re.search(r"http://\S+", ln).group(0) for ln in lines if "token=" in ln)
        assert url.startswith("http://127.0.0.1:") and "/lab/tree/analysis.ipynb?token=" in url
        pid = int(re.search(r"pid (\d+);", "".join(lines)).group(1))   # JupyterLab's, as printed
        assert "jupyter" in Path(f"/proc/{pid}/cmdline").read_text()
        # the run's copy, pointed at the run; the shipped notebook is untouched
        copy = json.loads((run / "analysis.ipynb").read_text())
        assert copy["metadata"]["chaos_inject"]["run_dir"] == str(run)
        shipped = Path(analysis.__file__).resolve().parents[1] / "notebooks" / "post_experiment_analysis.ipynb"
        assert all(not c.get("outputs") for c in json.loads(shipped.read_text())["cells"])

        with Browser() as b:
            b.open(url)
            title = b.wait_for("(() => { const h = document.querySelector('.jp-Notebook .jp-RenderedMarkdown h1');"
                               " return h && h.textContent; })()", timeout_s=180)
            assert "Post-experiment analysis of a chaos-inject run" in title
            # executed cells' figures: PNG outputs rendered and decoded by the browser
            # JupyterLab renders only cells in view: scroll down a screen per poll until the figures are drawn
            figures = b.wait_for("(() => { const p = document.querySelector('.jp-WindowedPanel-outer');"
                                 " if (p) p.scrollTop += 3000; const imgs = [...document.querySelectorAll("
                                 "'.jp-OutputArea-output img')].filter(i => i.complete && i.naturalWidth > 0);"
                                 " return imgs.length >= 2 && imgs.map(i => [i.naturalWidth, i.naturalHeight]); })()",
                                 timeout_s=120)
            assert all(w > 100 and h > 100 for w, h in figures)
            # the verdict cell's text output is there too
            assert b.wait_for("[...document.querySelectorAll('.jp-OutputArea-output')]"
                              ".some(o => /held|violated|inconclusive/i.test(o.textContent))")
            b.screenshot(tmp_path / "jupyterlab.png")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # what Ctrl-C does
        rc = proc.wait(60)
    assert rc == 130
    end = time.monotonic() + 30
    while _jupyter_pids() - before and time.monotonic() < end:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists()   # JupyterLab ended with its kernels
    assert _jupyter_pids() - before == set()


def _report(run_dir: Path) -> dict:
    """A report through the experiment's own writer, on a synthetic run's samples (no lab needed)."""
    from chaosinject.experiment.report import write_report, write_run_data
    from chaosinject.experiment.spec import GuardSpec

    analysis.example_run(run_dir, rng=7)
    (run_dir / "samples").mkdir()
    (run_dir / "samples.parquet").rename(run_dir / "samples" / "request.parquet")
    journal = {"experiment": {"title": "Browser report check", "description": "synthetic run"},
               "status": "completed", "deviated": False, "start": "2026-12-05T03:00:00", "duration": 180.0,
               "run": [], "rollbacks": [], "steady_states": {"before": None, "after": None, "during": []},
               "chaos-inject": {"run_id": "browser-1", "state": "completed", "exit_code": 0,
                                "hypothesis_strategy": "default", "rollback_strategy": "default"}}
    parts = write_run_data(run_dir, journal, None, [], [], GuardSpec())
    assert parts.plots, "no plots were made"
    write_report(run_dir, journal, parts)
    return journal


def test_html_report_shows_verdict_and_images(tmp_path):
    run = tmp_path / "run"
    verdict = _report(run)["chaos-inject"]["verdict"]   # what the writer judged; the page must show it
    with Browser() as b:
        b.open((run / "report.html").as_uri())
        b.wait_for("document.readyState === 'complete'", timeout_s=60)
        assert b.evaluate("document.querySelector('h1').textContent") == "Browser report check"
        text = b.evaluate("document.body.innerText")
        m = re.search(r"recorded samples: steady state (HELD|VIOLATED|INCONCLUSIVE|DEVIATED)", text)
        assert m, text[:2000]
        assert m.group(1).lower() == verdict.lower()
        images = b.wait_for("(() => { const imgs = [...document.images];"
                            " return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0)"
                            " && imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight]); })()", timeout_s=60)
        assert {alt for alt, _, _ in images} >= {"latency_cdf.png", "latency_over_time.png"}
        assert all(w > 100 and h > 100 for _, w, h in images)
