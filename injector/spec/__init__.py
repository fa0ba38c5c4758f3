"""Pure, validated specs: no I/O, no kernel."""

from .fault import FaultSpec, FourState, GilbertElliott, parse_loss_burst, parse_loss_state
from .flow import Endpoint, FlowSpec, parse_flow
from .inventory import Host, Inventory
from .units import format_duration_ns, parse_duration_ns, parse_percent_ratio

__all__ = [
    "Endpoint", "FaultSpec", "FlowSpec", "FourState", "GilbertElliott", "Host", "Inventory",
    "format_duration_ns", "parse_duration_ns", "parse_flow", "parse_loss_burst", "parse_loss_state", "parse_percent_ratio",
]
