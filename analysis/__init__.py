"""chaos-inject analysis: steady-state statistics (numpy/scipy only; importable without root, bcc or pyroute2).

Plots live in :mod:`chaosinject.analysis.plots` (the only matplotlib user); it is not imported here.
"""
from __future__ import annotations

# Each module's __all__ is its public API; the facade re-exports them (a name is listed once, where it is defined).
from . import _types, compare, dependence, proportions, quantiles, rundir, sequential, verdict
from ._types import *  # noqa: F401,F403
from .compare import *  # noqa: F401,F403
from .dependence import *  # noqa: F401,F403
from .proportions import *  # noqa: F401,F403
from .quantiles import *  # noqa: F401,F403
from .rundir import *  # noqa: F401,F403
from .sequential import *  # noqa: F401,F403
from .verdict import *  # noqa: F401,F403

__all__: list[str] = []
__all__ += _types.__all__
__all__ += proportions.__all__
__all__ += quantiles.__all__
__all__ += compare.__all__
__all__ += dependence.__all__
__all__ += sequential.__all__
__all__ += rundir.__all__
__all__ += verdict.__all__
