"""Recording: latency samples with phase labels, written into a run directory (docs/run-directory.md).

``Recording`` runs recorders around a fault: ``OneWayRecorder`` (per-packet one-way latency between two ends
on this host), ``RttRecorder`` (TCP RTT via sock_ops); both keep in-kernel log-linear histograms
(``Histogram``) and count lost ring-buffer events. The BPF side lives in chaosinject.kernel.record_program.
"""

from .bpf_recorder import PacketFlow
from .histogram import Histogram, histogram_of, read_histograms
from .oneway import OneWayRecorder, placement_sees
from .recording import LatencyShift, Recording, latency_shift
from .rtt import RttRecorder
from .store import PHASES, SOURCES, Phases, Recorder, write_samples

__all__ = ["PHASES", "SOURCES", "Histogram", "LatencyShift", "OneWayRecorder", "PacketFlow", "Phases", "Recorder",
           "Recording", "RttRecorder", "histogram_of", "latency_shift", "placement_sees", "read_histograms",
           "write_samples"]
