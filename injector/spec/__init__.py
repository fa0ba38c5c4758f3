"""Pure, validated specs: no I/O, no kernel."""

from .fault import FaultSpec, GilbertElliott, parse_loss_burst
from .flow import Endpoint, FlowSpec, parse_flow
from .inventory import Host, Inventory
from .units import format_duration_ns, parse_duration_ns, parse_percent_ratio

__all__ = [
    "Endpoint", "FaultSpec", "FlowSpec", "GilbertElliott", "Host", "Inventory",
    "format_duration_ns", "parse_duration_ns", "parse_flow", "parse_loss_burst", "parse_percent_ratio",
]
