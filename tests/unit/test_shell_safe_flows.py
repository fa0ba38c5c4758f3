"""Flows cut by a shell redirect: explained, never misread; every shipped example copy-paste safe."""

import glob
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from chaosinject.cli import EPILOG, _flows_from_args, build_parser
from chaosinject.errors import InvalidSpec
from chaosinject.experiment import ExperimentInvalid, parse_experiment
from chaosinject.experiment.loader import check_environment
from chaosinject.spec import parse_flow
from chaosinject.spec.shellsafe import cut_flow_message, looks_cut, process_arguments_problem

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("chaos-inject")


def test_the_exact_misfire_through_bash(tmp_path):
    """`--flow api->db` unquoted: bash makes the file `db`, we get `api-`; the error says so and names `db`."""
    proc = subprocess.run(["bash", "-c", f"{CLI} --flow api->db --loss 10% --duration 60s --dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert (tmp_path / "db").is_file()          # what the shell did
    assert (tmp_path / "db").read_text() == ""  # and nothing of ours went into it
    err = proc.stderr
    assert "looks cut by the shell" in err and "'>' is a redirect" in err
    assert "into the file 'db'" in err
    assert "--flow 'api->db'" in err and "--from api --to db" in err


def test_no_redirect_no_file_named():
    """Stdout is a pipe here, not a file the shell made: the message describes the file, does not invent one."""
    proc = subprocess.run([str(CLI), "--flow", "api-", "--loss", "10%", "--duration", "60s", "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "a new file named after the destination" in proc.stderr
    assert "--flow 'api->DST'" in proc.stderr and "--from api --to DST" in proc.stderr


@pytest.mark.parametrize("text", ["api-", "api->", " 10.0.0.1- ", "*->"])
def test_parse_flow_explains_a_cut_flow(text):
    assert looks_cut(text)
    with pytest.raises(InvalidSpec) as info:
        parse_flow(text)
    assert "looks cut by the shell" in str(info.value) and "--from" in str(info.value)


@pytest.mark.parametrize("text", ["api->db", "a-b->c-d", "10.0.0.1->10.0.0.2:5432/tcp", "*->*"])
def test_whole_flows_are_not_cut(text):
    assert not looks_cut(text)


def test_cut_flow_message_with_the_file_the_shell_made():
    msg = cut_flow_message("api-", created="db")
    assert "--flow api->db reached chaos-inject as --flow api-" in msg
    assert "'db'" in msg and "--flow 'api->db'" in msg and "--from api --to db" in msg


def _flows(argv):
    return _flows_from_args(build_parser().parse_args(["inject", *argv, "--duration", "1s"]))


def test_from_to_is_the_same_flow():
    assert _flows(["--from", "api", "--to", "db/tcp"]) == ["api->db/tcp"]
    assert _flows(["--flow", "a->b", "--from", "c", "--to", "d"]) == ["a->b", "c->d"]
    assert parse_flow(_flows(["--from", "10.0.0.1", "--to", "10.0.0.2:5432/tcp"])[0]) == \
        parse_flow("10.0.0.1->10.0.0.2:5432/tcp")


@pytest.mark.parametrize("argv, fragment", [
    (["--from", "api"], "--from and --to go together"),
    (["--to", "db"], "--from and --to go together"),
    ([], "no flow"),
])
def test_from_to_misuse(argv, fragment):
    with pytest.raises(InvalidSpec, match=fragment):
        _flows(argv)


@pytest.mark.parametrize("arguments", [
    "--flow api->db --delay 2s --duration 30s",
    "inject --flow 10.0.0.1->10.0.0.2:5432/tcp --loss 5% --duration 1m",
])
def test_process_arguments_with_an_unquoted_arrow(arguments):
    problem = process_arguments_problem(arguments)
    assert problem and "/bin/sh" in problem and "--from" in problem and "as a list" in problem


@pytest.mark.parametrize("arguments", [
    "--flow 'api->db' --delay 2s --duration 30s", '--flow "api->db" --loss 5%', "--from api --to db --loss 5%",
    "cpu-stress --load 80% --duration 30s", "echo done > /tmp/x", "unbalanced 'quote",
])
def test_process_arguments_that_are_fine(arguments):
    assert process_arguments_problem(arguments) is None


def test_a_ctk_process_action_with_an_unquoted_flow_is_refused_at_validation():
    exp = parse_experiment({"title": "t", "description": "d", "method": [
        {"type": "action", "name": "fault", "provider": {
            "type": "process", "path": "true", "arguments": "--flow api->db --delay 2s --duration 30s"}},
        {"type": "action", "name": "listed", "provider": {
            "type": "process", "path": "true", "arguments": ["--flow", "api->db"]}}]})
    with pytest.raises(ExperimentInvalid) as info:
        check_environment(exp)
    errors = dict(info.value.errors)
    assert list(errors) == ["method[0].provider.arguments"]
    assert "redirect" in errors["method[0].provider.arguments"]


# --- every example we ship is copy-paste safe --------------------------------------------------------------

def _shell_cut(line: str) -> bool:
    """An unquoted `->` (a token ending in '-' then a '>' redirect), also inside `-c '...'` (a nested shell)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return False
    for i, tok in enumerate(tokens):
        if tok.startswith(">") and i and tokens[i - 1].endswith("-"):
            return True
        if tok == "-c" and i + 1 < len(tokens) and _shell_cut(tokens[i + 1]):
            return True
    return False


def _doc_commands():
    files = [ROOT / "README.md", ROOT / "vagrant" / "README.md", ROOT / "bench" / "README.md",
             *map(Path, sorted(glob.glob(str(ROOT / "docs" / "*.md"))))]
    for path in files:
        text = path.read_text()
        for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            lang, body = block.group(1), block.group(2)
            if lang not in ("", "sh", "bash", "shell", "console"):
                continue
            for line in body.splitlines():
                if lang == "console":
                    if not line.startswith("$ "):
                        continue   # output, not a command
                    line = line[2:]
                yield f"{path.name}: {line}", line
        for span in re.finditer(r"`((?:sudo )?chaos-inject [^`\n]*)`", text):
            yield f"{path.name}: `{span.group(1)}`", span.group(1)
    for line in EPILOG.splitlines():
        if line.strip().startswith("sudo "):
            yield f"--help: {line}", line.split("    (")[0]


def test_the_scanner_sees_the_misfire():
    assert _shell_cut("sudo chaos-inject --flow api->db --loss 10%")
    assert _shell_cut("vagrant ssh api -c 'sudo chaos-inject --flow 'api->db' --loss 10%'")  # nested, unquoted
    assert not _shell_cut("sudo chaos-inject --flow 'api->db' --loss 10%   # api->db")


def test_docs_and_help_examples_are_copy_paste_safe():
    commands = list(_doc_commands())
    assert len(commands) > 20 and any("--flow 'api->db'" in c for _, c in commands)
    bad = [where for where, line in commands if _shell_cut(line)]
    assert bad == []


def test_shipped_experiments_have_no_unquoted_flow():
    files = sorted(glob.glob(str(ROOT / "injector" / "lab" / "experiments" / "*.json")))
    assert files
    for path in files:
        doc = json.loads(Path(path).read_text())
        stack, seen = [doc], 0
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("type") == "process" and isinstance(node.get("arguments"), str):
                    seen += 1
                    assert process_arguments_problem(node["arguments"]) is None, path
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
