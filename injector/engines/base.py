"""The engine seam: what the runner needs from whatever puts faults into the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..kernel.owner import KernelOwner
    from ..plan import Plan


class Engine(Protocol):
    name: str

    def check(self, plan: "Plan") -> None:
        """Raise Unsupported/InvalidSpec if the plan cannot be served. Must not change the kernel."""

    def apply(self, plan: "Plan", owner: "KernelOwner", expires_ns: int) -> None:
        """Create every kernel object through ``owner`` and install rules expiring at ``expires_ns``."""

    def renew(self, expires_ns: int) -> None:
        """Move every rule's expiry (CLOCK_MONOTONIC ns) to ``expires_ns``: the lease."""

    def counters(self) -> dict[int, dict[str, int]]:
        """Per rule id: matched/dropped/corrupted/duplicated packets and bytes."""
