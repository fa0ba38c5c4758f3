"""`chaos-inject notebook [RUN_DIR]`: the post-experiment notebook on one run, in JupyterLab.

The shipped notebook (notebooks/post_experiment_analysis.ipynb) is copied into the run directory as
``analysis.ipynb`` with RUN_DIR set to that run (the shipped one stays clean), executed once so that it opens with
its tables and figures, and JupyterLab is started on it: bound to 127.0.0.1 (``--ip`` to change), with a random
token, ``--allow-root``, no browser. It runs in the foreground in a session of its own; Ctrl-C or SIGTERM stops
it (SIGTERM to JupyterLab, which shuts its kernels down, SIGKILL after 15 s) and its runtime directory is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

from ..errors import ChaosInjectError, InvalidSpec

SHIPPED = Path(str(resources.files("chaosinject.notebooks") / "post_experiment_analysis.ipynb"))
COPY_NAME = "analysis.ipynb"
INLINE = "module://matplotlib_inline.backend_inline"
_RUN_DIR_LINE = re.compile(r'^RUN_DIR = Path\(os\.environ\.get\("CHAOS_RUN_DIR", "example-run"\)\)$', re.M)


def add_notebook_parser(sub) -> None:
    p = sub.add_parser("notebook", help="open the post-experiment notebook on a run directory in JupyterLab")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a run directory (meta.json inside); default: the newest under ./chaos-runs")
    p.add_argument("--ip", default="127.0.0.1", help="address JupyterLab listens on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-execute", action="store_true", help="copy the notebook without running it first")


def find_run_dir(run_dir: str | None) -> Path:
    if run_dir is None:
        runs = sorted(Path("chaos-runs").glob("*/meta.json"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise InvalidSpec("no run directory given and none under ./chaos-runs (a run of `chaos-inject demo`, "
                              "`run --record DIR` or `--record DIR`)", field="notebook")
        return runs[-1].parent.resolve()
    path = Path(run_dir)
    if not (path / "meta.json").is_file():
        raise InvalidSpec("not a run directory (no meta.json; see docs/run-directory.md)", text=run_dir,
                          field="notebook")
    return path.resolve()


def prepare_notebook(run: Path, *, execute: bool = True, shipped: Path = SHIPPED) -> tuple[Path, bool]:
    """The run's own copy of the notebook, made (and executed) unless it exists; returns (path, made now)."""
    import nbformat

    target = run / COPY_NAME
    if target.exists():
        return target, False
    nb = nbformat.read(shipped, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and _RUN_DIR_LINE.search(c.source)]
    if len(cells) != 1:
        raise ChaosInjectError(f"{shipped.name}: no single `RUN_DIR = ...` line to point at the run")
    cells[0].source = "%matplotlib inline\n" + _RUN_DIR_LINE.sub(f"RUN_DIR = Path({str(run)!r})  # chaos-inject notebook: this run",
                                        cells[0].source)
    nb.metadata["chaos_inject"] = {"run_dir": str(run), "copied_from": shipped.name}
    if execute:
        from nbclient import NotebookClient

        env = {"MPLBACKEND": INLINE}   # figures as PNG outputs (Agg would leave "<Figure ...>" text)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(run)}}).execute()
        except Exception as exc:  # noqa: BLE001 - the notebook's own error: still give the user the copy
            print(f"chaos-inject: the notebook stopped with an error while executing ({type(exc).__name__}); "
                  "it opens as far as it ran", file=sys.stderr)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    tmp = target.with_name(f".{COPY_NAME}.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return target, True


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _jupyter() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-lab")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-lab")
    if found is None:
        from ..errors import Unsupported

        raise Unsupported("JupyterLab is not installed (make setup installs it: the `notebooks` extra)")
    return [found]


def cmd_notebook(args: argparse.Namespace) -> int:
    run = find_run_dir(args.run_dir)
    _jupyter()   # fail before copying when JupyterLab is missing
    nb_path, made = prepare_notebook(run, execute=not args.no_execute)
    how = (f"copied from {SHIPPED.name}" + ("" if args.no_execute else " and executed")) if made \
        else "the run's own copy, kept as it is"
    print(f"notebook: {nb_path} ({how})", flush=True)
    token = secrets.token_hex(24)
    port = args.port or _free_port(args.ip)
    runtime = Path(tempfile.mkdtemp(prefix="chaos-inject-jupyter-"))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "MPLBACKEND": INLINE}
    cmd = [*_jupyter(), "--no-browser", "--allow-root", f"--ip={args.ip}", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={run}",
           "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"]
    host = f"[{args.ip}]" if ":" in args.ip else args.ip
    url = f"http://{host}:{port}/lab/tree/{COPY_NAME}?token={token}"
    stopping = threading.Event()

    def stop(signum, frame):  # noqa: ARG001
        stopping.set()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        log = open(runtime / "jupyterlab.log", "wb")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=run,
                                start_new_session=True)   # Ctrl-C reaches us; we stop it (no y/n prompt)
        if not _wait_ready(proc, args.ip, port, stopping, deadline_s=120):
            if stopping.is_set():
                return 130
            tail = (runtime / "jupyterlab.log").read_text(errors="replace")[-2000:]
            raise ChaosInjectError(f"JupyterLab did not start (exit {proc.poll()}):\n{tail}")
        print(f"JupyterLab on {run}\n  {url}\n  pid {proc.pid}; stop with Ctrl-C (or kill {os.getpid()})",
              flush=True)
        while not stopping.is_set() and proc.poll() is None:
            stopping.wait(0.5)
        return 0 if not stopping.is_set() else 130
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            log.close()
        shutil.rmtree(runtime, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
        if proc is not None:
            print("JupyterLab stopped", file=sys.stderr)


def _wait_ready(proc: subprocess.Popen, ip: str, port: int, stopping: threading.Event, deadline_s: float) -> bool:
    """Until the server answers /api (JSON with its version), it exits, or we are stopped."""
    from ..httpclient import get   # straight to the address: never through a proxy

    host = f"[{ip}]" if ":" in ip else ip
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None and not stopping.is_set():
        reply = get(f"http://{host}:{port}/api", 2)
        try:
            if reply.status == 200 and "version" in json.loads(reply.body):
                return True
        except ValueError:
            pass
        stopping.wait(0.25)
    return False
