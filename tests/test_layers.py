"""The package's layers: every import among nbops modules points down this order.

Function-local imports count; imports under ``if TYPE_CHECKING:`` do not (they never run).
A module may import its own layer's modules and anything below; nothing imports upward.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "nbops"
LAYERS = [  # top first; the README's map lists the same order
    ["__main__", "__init__"],  # the entry point and the public facade (lazy attributes)
    ["cli"],
    ["audit"],
    ["loop"],
    ["sweep"],
    ["serving"],
    ["promotion"],
    ["pipeline"],
    ["runner"],
    ["execution"],
    ["drift"],
    ["kernel_api"],
    ["records"],
    ["tracking"],
    ["contract"],
    ["models", "datasets", "torch_models"],
    ["util", "errors"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The layer name of a dotted module inside nbops (``nbops.records.store`` → records)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts[:-1])  # the package a relative import starts from
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "nbops"}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "nbops":
                continue
            if target == "nbops":  # from . import x / from .. import x
                found |= {f"nbops.{a.name}" for a in node.names}
            else:
                found.add(target)
    return found


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        own = _part(".".join(rel.parts))
        assert own in RANK, f"{path}: add its layer to LAYERS (and the README's map)"
        for target in _imports(path):
            other = _part(target)
            if other in RANK and RANK[other] < RANK[own]:
                wrong.append(f"{rel}: imports {target} (layer {other} is above {own})")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_local_imports() -> None:
    found = _imports(PACKAGE / "kernel_api.py")
    assert "nbops.records.interactive" in found  # imported inside a function
    assert not any("records.types" in t for t in found)  # only under TYPE_CHECKING
    assert "nbops.sweep.stage" in _imports(PACKAGE / "__init__.py")  # in __getattr__
    assert "nbops.records.store" in _imports(PACKAGE / "records" / "lifecycle.py")
