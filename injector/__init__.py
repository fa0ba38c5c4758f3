"""chaos-inject: per-flow network fault injection that proves what it did."""

__version__ = "0.1.0"
