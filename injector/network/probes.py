"""Probes, Chaos Toolkit layout: the functions of :mod:`chaosinject.experiment.probes`."""

from ..experiment.probes import *  # noqa: F401,F403
from ..experiment.probes import __all__  # noqa: F401
