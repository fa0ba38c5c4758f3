"""chaos-inject: per-flow network fault injection that proves what it did."""

__version__ = "0.1.0"

# the library API (see docs/library.md); importing it does not load pyroute2 or bcc
from .library import cpu_stress, kill_process, network_latency, packet_loss, partition  # noqa: E402
from .session import FaultSession, RunResult, start_fault  # noqa: E402

__all__ = ["FaultSession", "RunResult", "__version__", "cpu_stress", "kill_process", "network_latency",
           "packet_loss", "partition", "start_fault"]
