"""Every error nbops raises, under one root.

Each error carries structured fields and a message that says what to do next. The CLI
maps ``UsageError`` subclasses to exit code 2 and prints only the message (no traceback):
they are the user's mistakes, found before any kernel starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NbopsError(Exception):
    """Root of all nbops errors."""

    exit_code = 1


class UsageError(NbopsError):
    """Bad input from the user: exit code 2, no traceback, nothing written."""

    exit_code = 2


class TemplateError(UsageError):
    """A template cannot be found or breaks the template contract."""


class ParameterError(UsageError):
    """A parameter name or value does not fit the template's contract."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class RunNotFoundError(UsageError):
    """No run record with the given id."""


class ConfigError(UsageError):
    """A configuration file or option is unreadable or invalid."""


class InputTooLarge(ConfigError):
    """A parameter source is over one of the documented limits (size, depth, values,
    digits): parameters are settings, data belongs in files."""


class UnknownNameError(UsageError):
    """A name looked up in a registry (executor, scheduler, tracker) is not known."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        names = sorted(known)
        super().__init__(f"unknown {kind} {name!r}.{did_you_mean(name, names)} Known "
                         f"{kind}s: {', '.join(names) or '(none)'}.")
        self.kind, self.name = kind, name


class PipelineError(UsageError):
    """The pipeline file is inconsistent (exit 2, nothing run)."""


class MetricNotFound(UsageError):
    """The metric a sweep optimises is neither logged nor output by the template (found
    after a trial ran: the message names what it did log)."""


class TypeMismatch(ValueError):
    """A value cannot be converted to a declared type (wrapped in ParameterError for users)."""


class RecordError(NbopsError):
    """A run record on disk is corrupt or of an unknown schema."""


class NotRegularFileError(NbopsError):
    """A path nbops would read is a FIFO, socket, device or folder: never opened (reading a
    FIFO or a device can block forever)."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path}: not a regular file: {kind}")
        self.path = path
        self.kind = kind


class VerificationError(NbopsError):
    """Artifacts on disk do not match their run record."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ModelIntegrityError(NbopsError):
    """A model file's hash differs from its record: nbops refuses to unpickle it."""


class RegistryError(NbopsError):
    """A model-registry operation cannot be done (unknown model or version, nothing to roll
    back to)."""


class RegistryNotFound(UsageError, RegistryError):
    """No such registered model, version or alias: the user named something that is not
    there (exit 2)."""


class PromotionBlocked(RegistryError):
    """A promotion the project's policy does not allow yet (missing evidence or approvals,
    or the alias moved since the caller looked): exit 1, nothing moved."""


class RequestRejected(NbopsError):
    """A request the model server cannot answer as sent: the HTTP status to reply with and
    the field at fault (a column, a key of the body), if any."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field


class MissingDependencyError(UsageError):
    """An optional extra is needed for this feature."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'nbops[{extra}]'"
        )


class WorkerLostError(NbopsError):
    """A distributed worker died while (or before) it ran a stage: the run, if it started,
    is recorded ``failed`` with "worker lost"; the notebook is not run again by itself."""


class ExecutionInterrupt(Exception):
    """Raised by an execution engine to report how execution ended abnormally.

    Engines translate their own exceptions into these, so that deriving a run's status
    needs no knowledge of any engine (see ``nbops.execution.outcome``).
    """


class CellTimeout(ExecutionInterrupt):
    """A cell ran past the per-cell timeout."""


class KernelDied(ExecutionInterrupt):
    """The kernel process ended while a cell ran (signal, out of memory, os._exit)."""


class CellFailed(ExecutionInterrupt):
    """A cell raised; its error output is in the notebook."""


class StopRequested(ExecutionInterrupt):
    """The run was asked to stop (SIGTERM, Ctrl-C, whole-run timeout) before a cell."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest match to ``name`` among ``choices``, or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix, or an empty string."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""
