"""Reader of a BPF ring buffer of fixed-size 24-byte events (struct cr_event, or the classifier's hold events of
the same layout), mapped by us: the kernel's layout is a consumer-position page we write, then a producer-position
page and the data area mapped twice in a row, so a record that wraps is contiguous in memory. A batch of records
is one numpy structured array: no Python call per event.
"""

from __future__ import annotations

import mmap
import select

import numpy as np

# ring buffer record header
RB_BUSY = 1 << 31
RB_DISCARD = 1 << 30
RB_HDR = 8


# one ring record as it sits in memory: the kernel's 8-byte header, then struct cr_event
RECORD_DTYPE = np.dtype([("len", "<u4"), ("pg_off", "<u4"), ("t_ns", "<u8"), ("latency_ns", "<u8"),
                         ("rule", "<u4"), ("aux", "<u4")])
EVENT_SIZE = 24
EVENT_DTYPE = RECORD_DTYPE  # decoded events keep the header fields (len, pg_off) beside the event's own
MAX_BATCH = 65536           # records per read: space goes back to the producer in cache-sized steps


class RingReader:
    """Consumer of a BPF ring buffer of fixed-size cr_event records, decoded in batches into numpy."""

    def __init__(self, map_fd: int, data_bytes: int):
        page = mmap.PAGESIZE
        self.size = data_bytes
        self.mask = data_bytes - 1
        self._fd = map_fd
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * data_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data_off = page
        # positions through aligned 8-byte loads/stores: struct.pack_into/unpack_from copy byte by byte,
        # and a torn consumer position made the kernel see a full ring (reservations failed at 1 M/s)
        self._cons_pos = np.frombuffer(self._cons, np.uint64, count=1)
        self._prod_pos = np.frombuffer(self._prod, np.uint64, count=1)
        self._poll = select.poll()
        self._poll.register(map_fd, select.POLLIN)

    def pending_bytes(self) -> int:
        return int(self._prod_pos[0]) - int(self._cons_pos[0])

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the kernel says data is there (or timeout)."""
        return bool(self._poll.poll(max(0, int(timeout_s * 1000))))

    def read(self) -> np.ndarray:
        """Complete records now in the ring (at most MAX_BATCH), as EVENT_DTYPE; their space is handed back."""
        cons = int(self._cons_pos[0])
        prod = int(self._prod_pos[0])
        if prod == cons:
            return np.empty(0, EVENT_DTYPE)
        start = self._data_off + (cons & self.mask)
        return self._take(cons, prod, start)

    def _take(self, cons: int, prod: int, start: int) -> np.ndarray:
        n = min((prod - cons) // RECORD_DTYPE.itemsize, MAX_BATCH)
        recs = np.frombuffer(self._prod, RECORD_DTYPE, count=n, offset=start)
        out, used = decode_records(recs)
        if used:
            self._cons_pos[0] = cons + used * RECORD_DTYPE.itemsize
        return out

    def close(self) -> None:
        self._cons_pos = self._prod_pos = None  # views must go before their maps can close
        for m in (getattr(self, "_cons", None), getattr(self, "_prod", None)):
            if m is not None:
                m.close()
        self._cons = self._prod = None


def decode_records(recs: np.ndarray) -> tuple[np.ndarray, int]:
    """Records up to the first one the producer has not committed yet (busy bit), minus discarded ones.

    Returns (events as EVENT_DTYPE, number of records consumed). All records must be cr_event-sized (ours are).
    """
    lens = recs["len"]
    odd = lens != EVENT_SIZE  # one pass: a committed record of ours has exactly this length word
    if not odd.any():
        return recs.copy(), len(recs)  # one copy out of the ring, before its space is handed back
    busy = np.flatnonzero(lens & RB_BUSY)
    used = int(busy[0]) if busy.size else len(recs)
    out = recs[:used].copy()
    sizes = out["len"] & ~np.uint32(RB_BUSY | RB_DISCARD)
    if used and (sizes.min() != EVENT_SIZE or sizes.max() != EVENT_SIZE):
        bad = int(sizes[sizes != EVENT_SIZE][0])
        raise RuntimeError(f"ring record of {bad} bytes; this reader expects {EVENT_SIZE}-byte records")
    discarded = (out["len"] & RB_DISCARD) != 0
    if discarded.any():
        out = out[~discarded]
    return out, used
