"""Host faults from the seed: stop/kill a process or systemd unit (and bring it back), CPU stress.

No kernel objects: nothing for the ledger. Each fault is bounded by itself: a killed process is restarted when
the fault ends (also on error), stress workers stop at their deadline even if the process that started them dies.
"""

from .cpu import CpuShare, CpuStress, measure_cpu_load, measure_cpu_share
from .process import KillResult, ProcessKill, find_processes, systemd_is_init

__all__ = ["CpuShare", "CpuStress", "KillResult", "ProcessKill", "find_processes", "measure_cpu_load",
           "measure_cpu_share", "systemd_is_init"]
