"""The template contract: the ``parameters`` cell and the ``nbops`` notebook metadata.

A template is a notebook with one code cell tagged ``parameters`` whose assignments declare
each parameter with a type annotation, a default and a trailing comment as help::

    n_rows: int = 10_000  # rows to generate

and notebook metadata ``{"nbops": {"stage": "...", "outputs": [...]}}``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import math
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from ..errors import TemplateError, TypeMismatch, did_you_mean
from .types import TypeSpec, coerce, infer_spec, parse_annotation

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


@dataclass(frozen=True)
class Parameter:
    """One declared parameter."""

    name: str
    type: TypeSpec
    default: Any
    help: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": str(self.type), "default": self.default,
                "help": self.help}


@dataclass
class Template:
    """A parsed template notebook."""

    name: str
    path: Path
    sha256: str
    stage: str
    outputs: list[str]
    parameters: dict[str, Parameter]
    has_parameters_cell: bool
    notebook: nbformat.NotebookNode = field(repr=False)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "stage": self.stage, "outputs": self.outputs, "description": self.description,
                "parameters": [p.to_dict() for p in self.parameters.values()]}


def load_template(path: Path, name: str | None = None) -> Template:
    """Read and check a template notebook.

    Raises:
        TemplateError: unreadable notebook, several ``parameters`` cells, or a
            parameters cell that does not follow the contract.
    """
    try:
        raw = path.read_bytes()
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) > 1:
        raise TemplateError(f"template {path} has {len(cells)} cells tagged 'parameters'; "
                            "keep exactly one")
    meta = nb.metadata.get("nbops", {})
    params = parse_parameters_cell(cells[0].source, path) if cells else {}
    return Template(
        name=name or path.stem, path=path.resolve(), sha256=hashlib.sha256(raw).hexdigest(),
        stage=str(meta.get("stage", path.stem)), outputs=list(meta.get("outputs", [])),
        parameters=params, has_parameters_cell=bool(cells), notebook=nb,
        description=str(meta.get("description", "")),
    )


def parse_parameters_cell(source: str, path: Path | str = "<cell>") -> dict[str, Parameter]:
    """Parse the declarations of a parameters cell.

    Raises:
        TemplateError: a statement that is not a simple assignment of a literal.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise TemplateError(f"parameters cell of {path} is not valid Python: {exc}") from None
    comments = _trailing_comments(source)
    params: dict[str, Parameter] = {}
    for node in tree.body:
        name, spec, default = _declaration(node, path)
        if spec is None:
            spec = infer_spec(default)
        try:
            default = coerce(default, spec)
        except TypeMismatch as exc:
            raise TemplateError(f"{path}: default of '{name}' does not match its type "
                                f"{spec}: {exc}") from None
        params[name] = Parameter(name, spec, default, comments.get(node.end_lineno or 0, ""))
    return params


def _declaration(node: ast.stmt, path: Path | str) -> tuple[str, TypeSpec | None, Any]:
    where = f"{path}, parameters cell line {getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        if node.value is None:
            raise TemplateError(f"{where}: '{node.target.id}' needs a default value")
        try:
            spec = parse_annotation(node.annotation)
        except (ValueError, SyntaxError) as exc:
            raise TemplateError(f"{where}: {exc}; use int, float, bool, str, None, "
                                "list[...], dict[str, ...] or unions of them") from None
        return node.target.id, spec, _literal(node.value, where)
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)):
        return node.targets[0].id, None, _literal(node.value, where)
    raise TemplateError(f"{where}: only 'name: type = literal  # help' assignments are "
                        "allowed in a parameters cell")


def _literal(node: ast.expr, where: str) -> Any:
    """A literal default; ``float('nan')`` and ``float('inf')`` are allowed too."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "float" and len(node.args) == 1 and not node.keywords
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        value = float(node.args[0].value)
        if math.isnan(value) or math.isinf(value):
            return value
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise TemplateError(f"{where}: the default must be a literal, got "
                            f"{ast.unparse(node)!r}") from None


def _trailing_comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def package_templates_dir() -> Path:
    """Templates shipped with nbops (inside the wheel, or the source checkout's)."""
    inside = Path(__file__).resolve().parents[1] / "templates"
    return inside if inside.is_dir() else Path(__file__).resolve().parents[3] / "templates"


def template_dirs(project_dir: Path | None = None) -> list[Path]:
    """Search order: the project's ``templates/`` first, then those shipped with nbops."""
    project = (project_dir or Path.cwd()) / "templates"
    dirs = [project] if project.is_dir() else []
    shipped = package_templates_dir()
    if shipped.is_dir() and all(shipped.resolve() != d.resolve() for d in dirs):
        dirs.append(shipped)
    return dirs


def discover(project_dir: Path | None = None) -> dict[str, Path]:
    """Template name -> path; a project template shadows a shipped one of the same name."""
    found: dict[str, Path] = {}
    for folder in template_dirs(project_dir):
        for path in sorted(folder.glob("*.ipynb")):
            found.setdefault(path.stem, path)
    return found


def resolve(template: str | Path, project_dir: Path | None = None) -> Template:
    """A template by name or by path to an ``.ipynb``.

    Raises:
        TemplateError: no such template, with the known names and the closest match.
    """
    path = Path(template)
    if str(template).endswith(".ipynb") or path.is_file():
        if not path.is_file():
            raise TemplateError(f"template file {path} does not exist")
        return load_template(path)
    known = discover(project_dir)
    if str(template) in known:
        return load_template(known[str(template)], name=str(template))
    names = ", ".join(sorted(known)) or "(none)"
    raise TemplateError(f"unknown template '{template}'.{did_you_mean(str(template), known)} "
                        f"Known templates: {names}. Run 'nbops templates' to list them, or "
                        "pass a path to an .ipynb file.")
