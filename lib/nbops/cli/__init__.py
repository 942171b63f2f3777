"""The ``nbops`` command line, one module per command group.

- ``app``: the root group, error handling, exit codes, fast start;
- ``run``: ``run`` and ``templates``; ``runs``: ``runs ls|show|verify``;
- ``pipeline``: ``pipeline run|show|ls``; ``drift``: ``drift [compare]|history``;
- ``common``: options declared once, text formatting.

Invariant: commands hold no logic; they import the library inside the command, so that
``--help`` and light commands start fast.
"""

from __future__ import annotations

from .app import cli, main

__all__ = ["cli", "main"]
