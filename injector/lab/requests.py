"""The load generator's request log as a sample source (``source="request"``) and a live feed for halt guards.

The log is a flat file of fixed-size little-endian records (``chaosinject.lab.load_generator.RECORD``): request start
``t_ns`` (CLOCK_MONOTONIC, the injector's clock), ``latency_ns``, HTTP ``status`` (0: timeout or connection
error). Records are appended when a request ends, so the file is in completion order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..record.store import Phases, write_samples
from .load_generator import RECORD

DTYPE = np.dtype([("t_ns", "<i8"), ("latency_ns", "<i8"), ("status", "<i4"), ("reserved", "<u4")])
assert DTYPE.itemsize == RECORD.size, "request log record layout differs between writer and reader"


@dataclass(frozen=True)
class RequestRows:
    """Rows of the request log (numpy arrays of one length)."""

    t_ns: np.ndarray
    latency_ns: np.ndarray
    status: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """2xx and 3xx are successes; 4xx, 5xx and 0 (no answer) are errors."""
        return (self.status >= 200) & (self.status < 400)

    def __len__(self) -> int:
        return int(self.t_ns.size)


def _whole(size: int) -> int:
    return size - size % RECORD.size


def read_log(path: str | os.PathLike, start: int = 0, end: int | None = None) -> tuple[RequestRows, int]:
    """Whole records between byte offsets [start, end) (end: the file's end); returns the rows and the offset
    after the last whole record read (a record being written is left for the next read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    stop = _whole(size if end is None else min(end, size))
    if stop <= start:
        data = np.zeros(0, DTYPE)
    else:
        with path.open("rb") as f:
            f.seek(start)
            data = np.frombuffer(f.read(stop - start), dtype=DTYPE)
    rows = RequestRows(data["t_ns"].astype(np.int64), data["latency_ns"].astype(np.int64),
                       data["status"].astype(np.int32))
    return rows, max(start, stop)


class RequestLogRecorder:
    """``chaosinject.record.Recorder`` for the lab's requests: what the load generator logged between start()
    and stop() becomes ``samples/<part>.parquet`` with ``source="request"``."""

    source = "request"

    def __init__(self, log_path: str | os.PathLike, flow: str = "load->api", part: str = "request-0") -> None:
        self.log_path = Path(log_path)
        self.flow, self.part = flow, part
        self._start: int | None = None
        self._end: int | None = None
        self._cursor = 0

    def _size(self) -> int:
        try:
            return _whole(self.log_path.stat().st_size)
        except FileNotFoundError:
            return 0

    def start(self) -> None:
        self._start = self._cursor = self._size()
        self._end = None

    def stop(self) -> None:
        if self._start is None:
            raise RuntimeError("RequestLogRecorder.stop() before start()")
        self._end = self._size()

    def read_new(self) -> RequestRows:
        """Rows logged since the previous call (or since start()): for a halt guard polling live."""
        if self._start is None:
            raise RuntimeError("RequestLogRecorder.read_new() before start()")
        rows, self._cursor = read_log(self.log_path, self._cursor, self._end)
        return rows

    def rows(self) -> RequestRows:
        """Every row between start() and stop() (or now)."""
        if self._start is None:
            raise RuntimeError("RequestLogRecorder has not been started")
        return read_log(self.log_path, self._start, self._end)[0]

    def write(self, run_dir: Path, phases: Phases) -> dict:
        rows = self.rows()
        written = write_samples(run_dir, self.part, phases, t_ns=rows.t_ns, flow=self.flow, source=self.source,
                                latency_ns=rows.latency_ns, ok=rows.ok, status=rows.status)
        return {"samples": written, "lost": 0, "logged": len(rows), "errors": int((~rows.ok).sum()),
                "log": str(self.log_path)}
