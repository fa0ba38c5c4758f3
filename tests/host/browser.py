"""Headless Chromium driven over the DevTools protocol: open a page, wait for a condition in its DOM."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def why_not() -> str | None:
    """None if a headless chromium can run here, else the reason."""
    if CHROMIUM is None:
        return "chromium is not installed (make setup installs Debian's package)"
    try:
        import websocket  # noqa: F401 - websocket-client comes with jupyter_server
    except ImportError:
        return "websocket-client is not installed"
    return None


class Browser:
    """One headless chromium with a throwaway profile; loopback debugging port chosen by chromium."""

    def __init__(self):
        self.profile = Path(tempfile.mkdtemp(prefix="chaos-inject-chromium-"))
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--window-size=1280,12000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.close()
                raise RuntimeError(f"chromium did not start (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = []
        while not pages:
            if time.monotonic() > end:
                self.close()
                raise RuntimeError("chromium has no page to drive")
            try:
                pages = [t for t in json.loads(_NO_PROXY.open(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
                         if t.get("type") == "page"]
            except OSError:
                time.sleep(0.1)
        import websocket

        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 120):
        """Poll a JS expression until it is truthy; returns its value (a wait with a deadline, not a sleep)."""
        end = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"not true within {timeout_s}s: {expression}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
