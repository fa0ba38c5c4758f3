"""Flows cut by a shell redirect, explained.

Unquoted, ``--flow api->db`` is ``--flow api-`` plus the redirect ``>db``: the shell creates (or truncates) a
file ``db`` and sends our stdout there. We only see ``api-``. These helpers recognise that shape and say what
happened, which file the shell probably made, the quoted form and a form that needs no quoting
(``--from api --to db``).
"""

from __future__ import annotations

import os
import shlex


def looks_cut(text: str) -> bool:
    """A flow whose ``->`` lost its destination: it ends in ``-`` or in ``->``."""
    return isinstance(text, str) and text.strip().endswith(("-", "->"))


def redirect_target(fd: int = 1) -> str | None:
    """The regular file ``fd`` was redirected to (the shell's ``>FILE``), as the user would name it, or None."""
    try:
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            return None
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    try:
        rel = os.path.relpath(target)
    except ValueError:
        return target
    return rel if not rel.startswith("..") else target


def cut_flow_message(text: str, *, created: str | None = None) -> str:
    """What the shell did to ``text`` (a flow like ``api-``) and how to write it instead."""
    src = text.strip()
    src = src[:-2] if src.endswith("->") else src[:-1]
    src = src or "SRC"
    dst = os.path.basename(created) if created else "DST"
    if created:
        made = (f"the shell probably sent this command's output into the file {created!r} (it created or emptied "
                f"it: remove it if you did not mean to keep it)")
    else:
        made = "the shell wrote this command's output into a new file named after the destination, in the " \
               "directory you ran it from (remove it)"
    return (f"the flow {text.strip()!r} looks cut by the shell: unquoted, '>' is a redirect, so "
            f"--flow {src}->{dst} reached chaos-inject as --flow {src}- and {made}. "
            f"Quote the flow: --flow '{src}->{dst}', or name the sides, which needs no quoting: "
            f"--from {src} --to {dst}")


def process_arguments_problem(arguments: str) -> str | None:
    """For a process action's ``arguments`` string (run through /bin/sh, as chaoslib does): the explanation
    when an unquoted ``>`` cuts a flow (``--flow a->b``), else None."""
    lexer = shlex.shlex(arguments, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:   # unbalanced quotes: the shell reports that itself
        return None
    for i, tok in enumerate(tokens[1:], start=1):
        if tok.startswith(">") and tokens[i - 1].endswith("-") and tokens[i - 1] != "-":
            src = tokens[i - 1][:-1]
            dst = tokens[i + 1] if i + 1 < len(tokens) else "DST"
            return (f"{arguments!r} goes through /bin/sh, where the unquoted '>' of {src}->{dst} is a redirect "
                    f"(the flow would arrive as {src}- and the output land in a file {dst!r}): quote it, "
                    f"\"--flow '{src}->{dst}'\", use \"--from {src} --to {dst}\", or give the arguments as a list")
    return None


__all__ = ["looks_cut", "redirect_target", "cut_flow_message", "process_arguments_problem"]
