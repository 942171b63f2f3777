"""Names shown on a terminal: refused where declared when they hold control or format
characters, and escaped wherever printed.

A control character (``\\x1b``, ``\\r``) or a format character (U+202E RIGHT-TO-LEFT
OVERRIDE, zero-width spaces), Unicode categories ``Cc``, ``Cf``, ``Cs``, ``Co``, ``Cn``,
``Zl`` and ``Zp``, can recolour a terminal, hide text or show it reversed. :func:`unsafe`
lists them (a declaration is refused); :func:`shown` escapes them for printing (a record
written by hand or by an older nbops may hold them), so ``shown(x) == x`` for any name
``unsafe`` accepts.
"""

from __future__ import annotations

import unicodedata

_UNSAFE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _bad(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE


def unsafe(text: str) -> list[str]:
    """The control and format characters of ``text`` as ``U+XXXX``, sorted, once each."""
    return sorted({f"U+{ord(c):04X}" for c in text if _bad(c)})


def shown(text: str) -> str:
    """``text`` with each control or format character written as a Python escape
    (``\\x1b``, ``\\u202e``), printable as it is."""
    if not any(_bad(c) for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if _bad(c) else c
                   for c in text)
