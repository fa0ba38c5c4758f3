"""Recording: latency samples with phase labels, written into a run directory (docs/run-directory.md)."""

from .store import PHASES, SOURCES, Phases, Recorder, write_samples

__all__ = ["PHASES", "SOURCES", "Phases", "Recorder", "write_samples"]
