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
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from ..errors import TemplateError, TypeMismatch, did_you_mean
from ..util.text import shown, unsafe
from .reads import RegistryRead, parse_reads
from .types import TypeSpec, coerce, infer_spec, parse_annotation

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
DEFAULT_KERNEL = "python3"


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
    cache: bool = True  # False: the result depends on mutable outside state (the registry)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> help (no values here)
    reads: tuple[RegistryRead, ...] = ()  # outside state it reads (see contract.reads)

    @property
    def kernel_name(self) -> str:
        """The kernel the template asks for (``metadata.kernelspec.name``); a template without
        a kernelspec runs in ``python3``."""
        spec = self.notebook.metadata.get("kernelspec") or {}
        name = spec.get("name") if isinstance(spec, dict) else None
        return name if isinstance(name, str) and name else DEFAULT_KERNEL

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "stage": self.stage, "outputs": self.outputs, "description": self.description,
                "cache": self.cache, "reads": [r.to_dict() for r in self.reads],
                "parameters": [p.to_dict() for p in self.parameters.values()],
                "secrets": [{"name": n, "help": h} for n, h in self.secrets.items()]}


def load_template(path: Path, name: str | None = None) -> Template:
    """Read and check a template notebook.

    Raises:
        TemplateError: unreadable notebook, several ``parameters`` cells, or a
            parameters cell that does not follow the contract.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from None
    nb = _valid_notebook(path, raw)
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) > 1:
        raise TemplateError(f"template {path} has {len(cells)} cells tagged 'parameters'; "
                            "keep exactly one")
    meta = _nbops_metadata(path, nb.metadata.get("nbops", {}))
    params = parse_parameters_cell(cells[0].source, path) if cells else {}
    secrets = parse_secrets(cells[0].source, path) if cells else {}
    both = sorted(set(secrets) & set(params))
    if both:
        raise TemplateError(f"template {path} declares {', '.join(both)} both as a parameter "
                            "and as a secret; keep one")
    return Template(
        name=name or path.stem, path=path.resolve(), sha256=hashlib.sha256(raw).hexdigest(),
        stage=str(meta.get("stage", path.stem)), outputs=list(meta.get("outputs", [])),
        parameters=params, has_parameters_cell=bool(cells), notebook=nb,
        description=str(meta.get("description", "")), cache=meta.get("cache", True) is True,
        secrets=secrets, reads=parse_reads(path, meta.get("reads"), set(params)),
    )


def _valid_notebook(path: Path, raw: bytes) -> Any:
    """The notebook, checked against the nbformat 4 schema (never run an invalid one)."""
    import json

    from nbformat import ValidationError

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TemplateError(f"template {path} is not a notebook (not UTF-8 JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise TemplateError(f"template {path} is not a notebook: a notebook is a JSON object "
                            "with 'cells', 'metadata', 'nbformat' and 'nbformat_minor'")
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        message = exc.message if len(exc.message) <= 160 else exc.message[:157] + "..."
        raise TemplateError(f"template {path} fails the notebook schema at {where}: "
                            f"{message}. Open and save it in JupyterLab, or fix the "
                            "JSON by hand.") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TemplateError(f"template {path} is not a valid notebook: {exc}") from None
    return nb


def _nbops_metadata(path: Path, meta: Any) -> dict[str, Any]:
    """The ``nbops`` notebook metadata: a mapping with a stage name (no control or format
    characters), a list of output names (``[A-Za-z_][A-Za-z0-9_.-]*``: what a pipeline can
    reference as ``${stage.outputs.NAME}``) and a list of module names to ``preload``."""
    if not isinstance(meta, dict):
        raise TemplateError(f"template {path}: notebook metadata 'nbops' must be a mapping "
                            "like {\"stage\": \"train\", \"outputs\": [\"model_path\"]}, "
                            f"not {type(meta).__name__}")
    stage, outputs = meta.get("stage", path.stem), meta.get("outputs", [])
    if not isinstance(stage, str) or not isinstance(outputs, list) or not all(
            isinstance(o, str) for o in outputs):
        raise TemplateError(f"template {path}: nbops.stage must be a string and nbops.outputs "
                            "a list of output names")
    if not stage.strip() or unsafe(stage) or len(stage) > 128:
        why = (f"holds control or format characters ({', '.join(unsafe(stage))})"
               if unsafe(stage) else "is empty" if not stage.strip() else "is over 128 "
               "characters")
        raise TemplateError(f"template {path}: nbops.stage {shown(repr(stage))} {why}; name the "
                            "stage with plain characters, e.g. \"train\"")
    bad = [o for o in outputs if not _OUTPUT_NAME.fullmatch(o)]
    if bad:
        raise TemplateError(f"template {path}: nbops.outputs has {shown(repr(bad[0]))}, not "
                            "an output name: start with a letter or '_', then letters, "
                            "digits, '_', '.' or '-' (at most 128), e.g. \"model_path\"")
    if "cache" in meta and not isinstance(meta["cache"], bool):
        raise TemplateError(f"template {path}: nbops.cache must be true or false (false: the "
                            "stage reads state outside its inputs and always runs)")
    preload = meta.get("preload", [])
    if not isinstance(preload, list) or not all(
            isinstance(m, str) and _MODULE_NAME.fullmatch(m) for m in preload):
        raise TemplateError(f"template {path}: nbops.preload must be a list of module names "
                            f"to import in pool kernels, e.g. [\"pandas\", \"sklearn.linear_model"
                            f"\"], not {shown(repr(preload))[:80]}")
    return meta


_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse_parameters_cell(source: str, path: Path | str = "<cell>") -> dict[str, Parameter]:
    """Parse the declarations of a parameters cell.

    Raises:
        TemplateError: a statement that is not a simple assignment of a literal.
    """
    try:
        tree = ast.parse(source)
        compile(tree, str(path), "exec", dont_inherit=True)  # what only compiling finds
    except SyntaxError as exc:
        raise TemplateError(f"parameters cell of {path} is not valid Python: {exc}; fix the "
                            "cell (it must compile on its own)") from None
    comments = _trailing_comments(source)
    params: dict[str, Parameter] = {}
    imported = _typing_imports(tree, path)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _secret_name(node, imported):
            continue
        name, spec, default = _declaration(node, path)
        _check_names_defined(node, imported, path)
        if spec is None:
            spec = infer_spec(default)
        try:
            default = coerce(default, spec)
        except TypeMismatch as exc:
            raise TemplateError(f"{path}: default of '{name}' does not match its type "
                                f"{spec}: {exc}") from None
        params[name] = Parameter(name, spec, default, comments.get(node.end_lineno or 0, ""))
    return params


def parse_secrets(source: str, path: Path | str = "<cell>") -> dict[str, str]:
    """The secrets a parameters cell declares (``API_TOKEN: Secret  # help``, with
    ``from nbops import Secret`` above it): name -> help. A secret never has a value in the
    template; its name is the environment variable (or credentials-file key) it comes from.

    Raises:
        TemplateError: a secret given a value, or named like a variable nbops or the kernel
            relies on.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise TemplateError(f"parameters cell of {path} is not valid Python: {exc}") from None
    imported = _typing_imports(tree, path)
    comments = _trailing_comments(source)
    found: dict[str, str] = {}
    for node in tree.body:
        name = _secret_name(node, imported)
        if name is None:
            continue
        where = f"{path}, parameters cell line {node.lineno}"
        if "Secret" not in imported and "annotations" not in imported:
            raise TemplateError(f"{where}: the annotation uses 'Secret' but the cell does not "
                                "import it; add 'from nbops import Secret' as the first line "
                                "of the parameters cell")
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            raise TemplateError(f"{where}: secret '{name}' is given a value; a secret's value "
                                "never appears in a template: write "
                                f"'{name}: Secret' and set the environment variable {name} "
                                "(or the credentials file) when you run it")
        problem = reserved_secret_name(name)
        if problem:
            raise TemplateError(f"{where}: secret '{name}' {problem}; rename it")
        found[name] = comments.get(node.end_lineno or 0, "")
    return found


_RESERVED_PREFIXES = ("NBOPS_", "MLFLOW_", "JPY_", "JUPYTER", "IPYTHON", "PYTHON", "LD_",
                      "DYLD_", "LC_", "OMP_", "MKL_", "OPENBLAS_", "KMP_")
_RESERVED = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TMPDIR", "TEMP",
             "TMP", "PWD", "MPLBACKEND", "MPLCONFIGDIR", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "TZ"}


def reserved_secret_name(name: str) -> str | None:
    """Why ``name`` cannot name a secret (it is the kernel's environment variable of that
    name, so it would replace one nbops, Python or Jupyter relies on), or None."""
    upper = name.upper()
    if upper in _RESERVED or upper.startswith(_RESERVED_PREFIXES):
        return ("is the name of an environment variable that nbops, Python or Jupyter uses "
                "(the secret reaches the kernel as the variable of its name)")
    if not _SECRET_NAME.fullmatch(name):
        return "must be letters, digits and underscores, at most 128"
    return None


_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _secret_name(node: ast.stmt, imported: set[str]) -> str | None:
    """The declared name when ``node`` is ``NAME: Secret`` (with or without a value)."""
    if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(node.annotation, ast.Name) and node.annotation.id == "Secret"):
        return node.target.id
    return None


_TYPING_NAMES = {"Any", "Optional", "Union", "List", "Dict", "Literal"}
_IMPORTED_FROM = {**{n: "typing" for n in _TYPING_NAMES}, "Path": "pathlib",
                  "Secret": "nbops"}


def _typing_imports(tree: ast.Module, path: Path | str) -> set[str]:
    """Names the parameters cell imports; only ``typing``, ``__future__`` and ``pathlib``
    imports are allowed there (annotations are evaluated when the cell runs, so ``Any`` or
    ``Path`` must exist)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in ("typing", "__future__",
                                                                 "pathlib"):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import) and all(a.name == "typing" for a in node.names):
            names |= {a.asname or a.name for a in node.names}
        elif (isinstance(node, ast.ImportFrom) and node.module == "nbops"
              and all(a.name == "Secret" and a.asname is None for a in node.names)):
            names.add("Secret")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            raise TemplateError(f"{path}, parameters cell line {node.lineno}: only imports "
                                "from typing, pathlib (and __future__), and 'from nbops "
                                "import Secret', are allowed in a parameters cell; import "
                                "other modules in a later cell")
    return names


def _check_names_defined(node: ast.stmt, imported: set[str], path: Path | str) -> None:
    """An annotation naming ``Any`` (or Optional, ...) needs its import in the cell, or the
    cell fails when it runs (by hand and headless alike)."""
    annotation = node.annotation if isinstance(node, ast.AnnAssign) else None
    if annotation is None or "annotations" in imported:
        return
    for name in ast.walk(annotation):
        if isinstance(name, ast.Name) and name.id in _IMPORTED_FROM and name.id not in imported:
            raise TemplateError(
                f"{path}, parameters cell line {node.lineno}: the annotation uses {name.id!r} "
                f"but the cell does not import it; add 'from {_IMPORTED_FROM[name.id]} import "
                f"{name.id}' as the first line of the parameters cell")


def _declaration(node: ast.stmt, path: Path | str) -> tuple[str, TypeSpec | None, Any]:
    where = f"{path}, parameters cell line {getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        if node.value is None:
            raise TemplateError(f"{where}: '{node.target.id}' needs a default value")
        try:
            spec = parse_annotation(node.annotation)
        except (ValueError, SyntaxError) as exc:
            raise TemplateError(f"{where}: {exc}; use int, float, bool, str, None, "
                                "list[...], dict[str, ...], Literal[...], Path or unions of "
                                "them") from None
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
    """Search order: the project's ``templates/`` first (``project_dir``, else the project
    root, else the working directory), then those shipped with nbops."""
    from ..util.project import find_root

    project = (project_dir or find_root() or Path.cwd()) / "templates"
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
