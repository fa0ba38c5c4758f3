"""Network fault actions, Chaos Toolkit layout: the functions of :mod:`chaosinject.experiment.actions`."""

from ..experiment.actions import *  # noqa: F401,F403
from ..experiment.actions import __all__  # noqa: F401
