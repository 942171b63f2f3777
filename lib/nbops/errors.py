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


class RecordError(NbopsError):
    """A run record on disk is corrupt or of an unknown schema."""


class VerificationError(NbopsError):
    """Artifacts on disk do not match their run record."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ModelIntegrityError(NbopsError):
    """A model file's hash differs from its record: nbops refuses to unpickle it."""


class MissingDependencyError(UsageError):
    """An optional extra is needed for this feature."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'nbops[{extra}]'"
        )


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest match to ``name`` among ``choices``, or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix, or an empty string."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""
