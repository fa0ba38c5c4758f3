"""Exception tree. Validation errors (bad input, nothing touched) are apart from runtime failures."""

from __future__ import annotations


class ChaosInjectError(Exception):
    """Base of every error chaos-inject raises on purpose."""


class InvalidSpec(ChaosInjectError, ValueError):
    """A flow, fault, inventory or option is malformed. Raised before any kernel change.

    ``text`` is the offending input, ``field`` the option or key it came from.
    """

    def __init__(self, message: str, *, text: str | None = None, field: str | None = None):
        self.text = text
        self.field = field
        where = f"{field}: " if field else ""
        shown = f" (got {text!r})" if text is not None else ""
        super().__init__(f"{where}{message}{shown}")


class Unsupported(ChaosInjectError, RuntimeError):
    """The kernel or host lacks something the request needs. Raised before any kernel change."""


class NotPermitted(ChaosInjectError, PermissionError):
    """The operation needs privileges (root / CAP_NET_ADMIN + CAP_BPF) that we do not have."""


class ApplyFailed(ChaosInjectError, RuntimeError):
    """Creating a kernel object failed; whatever was created before has been undone."""


class Busy(ChaosInjectError, TimeoutError):
    """Another chaos-inject process held a shared lock for too long; nothing was changed while waiting."""


class CleanupFailed(ChaosInjectError, RuntimeError):
    """Undoing one or more kernel objects failed; ``failures`` lists (entry, error) pairs."""

    def __init__(self, message: str, failures: list[tuple[dict, BaseException]] | None = None):
        self.failures = failures or []
        super().__init__(message)


class Interrupted(ChaosInjectError):
    """A termination signal (SIGINT, SIGTERM, SIGHUP) arrived; raised in the main thread to unwind."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class ExperimentInvalid(InvalidSpec):
    """The experiment file does not validate; ``errors`` lists ``(field path, problem)``, all of them.

    Defined here (not in experiment/spec.py, which re-exports it) so that the recorders, a floor below the
    experiment package, can raise it without importing it."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None):
        self.errors = list(errors)
        head = f"{source}: " if source else ""
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.errors]
        super().__init__(head + f"{len(lines)} problem(s) in the experiment:\n  " + "\n  ".join(lines))
