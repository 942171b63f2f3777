"""Who is acting, and when two names are the same person (standard library only).

One :func:`current_user` serves the ledger and the run records: ``$NBOPS_USER``, else the
login name. A name is self-declared, never authenticated: ``--user``/``$NBOPS_USER`` say
who acts, and anyone can say anyone (team mode replaces them with authentication).

Invariants:

- :func:`checked` refuses an empty or whitespace-only name, a name with a control or
  format character (``C*`` Unicode categories: newlines, NUL, U+202E...) and one over
  :data:`MAX_LENGTH` characters; it returns the name stripped and NFKC-normalised (how the
  ledger stores it, case kept for display);
- :func:`same_person` compares :func:`key` of both names: NFKC, casefolded, NFKC again
  (Unicode caseless matching), so ``ALICE``, ``alice `` and ``ａｌｉｃｅ`` are one person.
"""

from __future__ import annotations

import getpass
import os
import unicodedata

from ..errors import UsageError
from .envvars import USER

MAX_LENGTH = 200


def checked(name: str, source: str = "--user") -> str:
    """``name`` stripped and NFKC-normalised.

    Raises:
        UsageError: empty, whitespace-only, a control/format character, or too long.
    """
    shown = unicodedata.normalize("NFKC", name).strip()
    if not shown:
        raise UsageError(f"{source} is empty: name who acts (e.g. --user alice); "
                         "an empty name is nobody")
    bad = sorted({f"U+{ord(c):04X}" for c in shown if unicodedata.category(c)[0] == "C"})
    if bad:
        raise UsageError(f"{source} {name!r} holds control or format characters "
                         f"({', '.join(bad)}): use a plain name")
    if len(shown) > MAX_LENGTH:
        raise UsageError(f"{source} is {len(shown)} characters long; at most {MAX_LENGTH}")
    return shown


def key(name: str) -> str:
    """The form two names are compared in (Unicode caseless matching, spaces stripped)."""
    folded = unicodedata.normalize("NFKC", name).strip().casefold()
    return unicodedata.normalize("NFKC", folded)


def same_person(one: str, other: str) -> bool:
    return key(one) == key(other)


def current_user(given: str | None = None) -> str:
    """Who acts: ``given`` (``--user``) when not None, else ``$NBOPS_USER`` when set and not
    empty (an empty variable counts as unset, as for other variables), else the login
    name (``"unknown"`` when the system cannot say); checked (:func:`checked`).

    Raises:
        UsageError: the chosen name is empty, has control characters, or is too long.
    """
    if given is not None:
        return checked(given, "--user")
    from_env = os.environ.get(USER)
    if from_env:
        return checked(from_env, f"${USER}")
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER in a container
        return "unknown"
    try:
        return checked(login, "the login name")
    except UsageError:
        return "unknown"
