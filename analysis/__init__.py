"""chaos-inject analysis: steady-state statistics (numpy/scipy only; importable without root, bcc or pyroute2).

Plots live in :mod:`chaosinject.analysis.plots` (the only matplotlib user); it is not imported here.
"""
from __future__ import annotations

# Each module's __all__ is its public API; the facade re-exports them (a name is listed once, where it is defined).
from . import (_types, checks, compare, dependence, mann_whitney, phases, priors, proportions, quantile_shift,
               quantiles, rundir, sequential, tail_rank, verdict)
from ._types import *  # noqa: F401,F403
from .mann_whitney import *  # noqa: F401,F403
from .quantile_shift import *  # noqa: F401,F403
from .tail_rank import *  # noqa: F401,F403
from .dependence import *  # noqa: F401,F403
from .proportions import *  # noqa: F401,F403
from .quantiles import *  # noqa: F401,F403
from .rundir import *  # noqa: F401,F403
from .priors import *  # noqa: F401,F403
from .sequential import *  # noqa: F401,F403
from .phases import *  # noqa: F401,F403
from .checks import *  # noqa: F401,F403
from .verdict import *  # noqa: F401,F403

__all__: list[str] = []
__all__ += _types.__all__
__all__ += proportions.__all__
__all__ += quantiles.__all__
__all__ += mann_whitney.__all__      # compare.py gathers these three for older imports
__all__ += quantile_shift.__all__
__all__ += tail_rank.__all__
__all__ += dependence.__all__
__all__ += priors.__all__
__all__ += sequential.__all__
__all__ += rundir.__all__
__all__ += phases.__all__
__all__ += checks.__all__
__all__ += verdict.__all__
