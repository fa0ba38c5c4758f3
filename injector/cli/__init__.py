"""The command line, one room per subcommand group: ``main`` (the parser and the dispatch), ``inject``, ``sweep``,
``status``, ``stop``, ``schedule``, ``run`` (``experiment``), ``lab``, ``demo``, ``host`` (cpu-stress,
kill-process), ``notebook``; ``exits`` the exit codes, ``fleet`` what an Ansible ``--inventory`` means.

Argument parsing and presentation only: the work is done below (plan, runs, kernel, experiment, lab, fleet).
``chaos-inject`` (pyproject.toml) and ``python -m chaosinject.cli`` both run :func:`main`. Importing this package
imports the start-up rooms only (``main``, ``inject``, ``sweep``, ``status``): tests/unit/test_cli_startup.py.
"""

from .exits import EXIT_ERROR, EXIT_NO_EFFECT, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from .inject import _flows_from_args, cmd_inject, parse_fault
from .main import _COMMAND_HELP, _COMMAND_PARSERS, EPILOG, SUBCOMMANDS, build_parser, main

__all__ = ["EPILOG", "EXIT_ERROR", "EXIT_NO_EFFECT", "EXIT_OK", "EXIT_UNSUPPORTED", "EXIT_USAGE", "SUBCOMMANDS",
           "_COMMAND_HELP", "_COMMAND_PARSERS", "_flows_from_args", "build_parser", "cmd_inject", "main",
           "parse_fault"]
