"""The old name of :mod:`chaosinject.experiment.http_load` (HttpLoad), kept while experiment/runner.py still imports
it under this name (runner.py is being split for issue #19; the split moves its import to http_load, and this
module goes). New code imports ``chaosinject.experiment.http_load``."""

from .http_load import Batch, HttpLoad

__all__ = ["Batch", "HttpLoad"]
