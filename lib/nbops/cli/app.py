"""The ``nbops`` command line: the root group and the entry point.

Each command group lives in its own module and only parses, delegates and formats.
Exit codes: 0 succeeded; 1 a run failed or was killed, or verification found problems;
2 bad usage, template or parameters (nothing was run or written); 3 a drift gate
(``--fail-on``) tripped.
"""

from __future__ import annotations

import sys

import click

from ..errors import NbopsError
from .audit import audit_cmd
from .demo import demo_group
from .drift import drift_group
from .init import init_cmd
from .loop import loop_group
from .models import models_group
from .pipeline import pipeline_group
from .run import run_cmd, templates_cmd
from .runs import runs_group
from .serve import serve_cmd
from .sweep import sweep_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbops")
def cli() -> None:
    """nbops: run parameterized notebooks as recorded, reproducible stages."""


for command in (run_cmd, templates_cmd, runs_group, pipeline_group, drift_group, serve_cmd,
                models_group, init_cmd, sweep_group, audit_cmd, loop_group, demo_group):
    cli.add_command(command)


def fast_start() -> None:
    """Skip ``rfc3987_syntax``: jsonschema (pulled in by nbformat) treats it as optional, and
    importing it builds a grammar that costs 1-2 s on every command. Command line only."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one clear message and an exit code, no traceback."""
    fast_start()
    try:
        cli.main(args=argv, prog_name="nbops", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NbopsError as exc:
        click.echo(f"nbops: error: {exc}", err=True)
        sys.exit(exc.exit_code)
