"""CLI start-up: a command builds only its own parser; `--help` and `status` stay off the heavy modules."""

from __future__ import annotations

import json
import subprocess
import sys

from chaosinject import cli


def _commands(parser) -> list[tuple[str, str]]:
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return [(a.dest, a.help) for a in sub._choices_actions]


def test_the_lazy_help_lines_are_the_modules_own():
    full = _commands(cli.build_parser())
    assert [name for name, _ in full] == list(cli.SUBCOMMANDS[:3]) + ["doctor"] + list(cli._COMMAND_PARSERS)
    for command in ["", "status", *cli._COMMAND_PARSERS]:
        assert _commands(cli.build_parser(command)) == full, command


def test_each_command_parses_as_with_the_whole_parser():
    cases = [["status", "--json"], ["stop", "--all"], ["cpu-stress", "--load", "50%", "--duration", "1s"],
             ["kill-process", "--pid", "1"], ["run", "x.json", "--dry-run"], ["lab", "status"],
             ["schedule", "@every 10m", "--count", "2"]]
    for argv in cases:
        assert vars(cli.build_parser(argv[0]).parse_args(argv)) == vars(cli.build_parser().parse_args(argv)), argv


def _imported_by(argv: list[str]) -> set[str]:
    code = ("import contextlib, io, json, sys\nfrom injector import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        cli.main(json.loads(sys.argv[1]))\n    except SystemExit:\n        pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_help_and_status_import_no_heavy_module():
    heavy = {"numpy", "scipy", "pandas", "analysis", "bcc", "pyroute2", "chaosinject.library", "chaosinject.session",
             "chaosinject.experiment", "chaosinject.lab", "chaosinject.schedule", "chaosinject.hostrun",
             "chaosinject.supervisor", "chaosinject.cli.experiment", "chaosinject.cli.lab", "chaosinject.cli.demo",
             "chaosinject.cli.stop", "chaosinject.cli.schedule", "chaosinject.cli.host", "chaosinject.cli.notebook"}
    for argv in (["--help"], ["status", "--recent", "0"]):
        assert not _imported_by(argv) & heavy, argv


def test_the_inject_path_imports_no_statistics_before_the_fault():
    # what cmd_inject imports before the fault is active (the summary imports analysis afterwards)
    code = ("import sys\nfrom injector import cli\nfrom chaosinject.prepare import prepare\n"
            "from chaosinject.engines.select import make_engine\nfrom chaosinject.runner import run_plan\n"
            "from chaosinject.summary import summarize\nimport chaosinject.supervisor, chaosinject.engines.ebpf\n"
            "print(sorted(m for m in ('numpy', 'scipy', 'pandas', 'analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# programs of their own (`python3 -m ...` on the lab's namespaces and the Vagrant VMs, Debian's python3 alone), not
# chaos-inject subcommands: their small parsers stay beside the code they run
STANDALONE = {"chaosinject.lab.api", "chaosinject.lab.load_generator", "chaosinject.lab.definition"}


def test_the_command_line_lives_in_the_cli_package():
    """Every chaos-inject subcommand's parser is built in chaosinject.cli; no other module parses arguments,
    except the lab's standalone programs."""
    import ast

    from test_import_graph import ROOT, modules

    parsing = set()
    for name, path in modules(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("ArgumentParser", "add_parser", "add_subparsers"):
                parsing.add(name)
    assert {"chaosinject.cli.main", "chaosinject.cli.experiment", "chaosinject.cli.host"} <= parsing
    outside = sorted(m for m in parsing - STANDALONE if m != "chaosinject.cli" and not m.startswith("chaosinject.cli."))
    assert not outside, f"argument parsing outside chaosinject.cli: {outside}"
    for module, _adder in cli._COMMAND_PARSERS.values():
        assert module.startswith(".") and f"chaosinject.cli{module}" in parsing, module
