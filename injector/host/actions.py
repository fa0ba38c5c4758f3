"""Host fault actions, Chaos Toolkit layout: the functions of :mod:`chaosinject.experiment.hostactions`."""

from ..experiment.hostactions import *  # noqa: F401,F403
from ..experiment.hostactions import __all__  # noqa: F401
