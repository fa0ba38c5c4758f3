"""Chaos Toolkit's extension layout (``chaos<name>.<area>.actions/probes/controls``) for chaos-inject's network
faults: :mod:`.actions`, :mod:`.probes` (the functions of :mod:`chaosinject.experiment.actions` and
:mod:`chaosinject.experiment.probes`) and :mod:`.controls` (the extension's ``record``/``verdict`` blocks under
``chaos run``)."""
