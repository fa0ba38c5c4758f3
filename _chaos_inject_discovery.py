"""Chaos Toolkit discovery of chaos-inject: ``chaos discover chaos-inject --no-install``.

chaoslib imports the *first* top-level name of the distribution (its top_level.txt, which setuptools sorts)
and calls that module's ``discover()``. Ours ships two packages, ``analysis`` and ``injector``, so this module
exists to be first ("_" sorts before letters) and hands over to :func:`chaosinject.experiment.discover`.
"""

from chaosinject.experiment import discover

__all__ = ["discover"]
