"""``nbops init [DIR]``: scaffold a project (its root marker, templates, a pipeline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

GITIGNORE = """\
# nbops: run records, the embedded MLflow store, and notebook housekeeping
runs/
mlruns/
.ipynb_checkpoints/
__pycache__/
"""


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", default=None, help="Project name [the folder's name].")
def init_cmd(directory: Path, name: str | None) -> None:
    """Make DIRECTORY an nbops project: nbops.yaml (the root marker), templates/ with an
    example template, pipeline.yaml (the full lifecycle on bundled data) and .gitignore.
    Nothing is overwritten: existing files (a symlink too, even a dangling one) make it
    stop before writing anything; a folder that cannot be made or written is exit 2."""
    from ..contract.template import package_templates_dir
    from ..errors import ConfigError
    from ..util.files import atomic_write_text
    from ..util.project import config_text

    root = directory.resolve()
    shipped = package_templates_dir()
    files = {root / "nbops.yaml": config_text(name or root.name),
             root / ".gitignore": GITIGNORE,
             root / "pipeline.yaml": _pipeline()}
    example = root / "templates" / "example.ipynb"
    existing = [p for p in [*files, example] if os.path.lexists(p)]
    if existing:
        raise ConfigError("not initialising: these already exist: "
                          + ", ".join(str(p) for p in existing)
                          + "; move them away or pick another folder (nothing was written)")
    notebook = json.loads((shipped / "sample.ipynb").read_text(encoding="utf-8"))
    notebook["metadata"].pop("jupytext", None)  # no .py twin here
    notebook["metadata"].setdefault("nbops", {})["stage"] = "example"
    try:
        (root / "templates").mkdir(parents=True, exist_ok=True)
        atomic_write_text(example, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        for path, text in files.items():
            atomic_write_text(path, text)
    except OSError as exc:
        where = exc.filename or root
        raise ConfigError(f"cannot initialise {root}: {where}: {exc.strerror or exc} (is a "
                          "part of the path a file, or the folder read-only?); pick a folder "
                          "you can write") from None
    click.echo(f"nbops project in {root}:")
    click.echo("  nbops.yaml         project root marker (and promotion policy)")
    click.echo("  templates/         your templates (example.ipynb to start from)")
    click.echo("  pipeline.yaml      the lifecycle pipeline: nbops pipeline run")
    click.echo("  .gitignore         keeps runs/ out of git")
    click.echo("next: nbops templates; nbops run example; nbops pipeline run")


def _pipeline() -> str:
    """The lifecycle demo pipeline, pointing at the shipped templates by name."""
    from ..contract.template import package_templates_dir

    demo = package_templates_dir().parent / "notebooks" / "pipeline.yaml"
    if demo.is_file():
        return demo.read_text(encoding="utf-8").replace(
            "nbops pipeline run notebooks/pipeline.yaml", "nbops pipeline run")
    return ("name: lifecycle\nstages:\n  prepare:\n    template: prepare\n  train:\n"
            "    template: train\n    parameters:\n"
            "      train_path: \"${prepare.outputs.train_path}\"\n")
