"""Models in MLflow's model format: fast to save, safe to load.

Saving passes the pip requirements nbops already knows, so MLflow does not spend seconds
inferring them. Loading re-hashes every file of the model against the run record first and
refuses to unpickle anything that changed; MLflow's own pickle guard
(``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``) is set to false for models nbops did not write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records.types import Artifact

from .errors import ModelIntegrityError, NbopsError
from .util.files import sha256_file, walk_files

PICKLE_GUARD = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def guard_pickle() -> None:
    """Keep MLflow from unpickling models unless the user explicitly allowed it."""
    os.environ.setdefault(PICKLE_GUARD, "false")


def _pins(*names: str) -> list[str]:
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def flavor_of(model: Any) -> str:
    """``pytorch`` for a ``torch.nn.Module``, ``sklearn`` for an estimator."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ == "Module":
            return "pytorch"
    if hasattr(model, "fit") and (hasattr(model, "predict") or hasattr(model, "transform")):
        return "sklearn"
    raise TypeError(f"log_model supports scikit-learn estimators and torch.nn.Module, got "
                    f"{type(model).__module__}.{type(model).__qualname__}")


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's log warnings while saving (the pickle caution nbops answers with its hash
    checks, requirement notes) stay out of the user's notebook, where they show as red
    stderr. MLflow must be imported first: importing it resets its loggers' levels."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def save_model(model: Any, dest: Path, input_example: Any = None) -> str:
    """Save ``model`` to ``dest`` in MLflow's format; returns the flavor."""
    flavor = flavor_of(model)
    if flavor == "sklearn":
        import mlflow.sklearn

        with quiet_mlflow():
            mlflow.sklearn.save_model(
                model, str(dest), serialization_format="cloudpickle",
                pip_requirements=_pins("scikit-learn", "cloudpickle", "numpy", "pandas"),
                input_example=input_example)
    else:
        import mlflow.pytorch

        with quiet_mlflow():
            mlflow.pytorch.save_model(
                model, str(dest), pip_requirements=_pins("torch", "cloudpickle", "numpy"),
                input_example=input_example, serialization_format="pickle")
    return flavor


def model_digest(folder: str | Path) -> str:
    """One sha256 for a model folder's content: over every file's relative path and sha256
    (a symlink: its target), in sorted order. Paths outside the folder play no part, so a
    copied or moved project gives the same digest; the registry uses it as the model's
    identity (``nbops.model_sha256``).

    Raises:
        NbopsError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NbopsError(f"{folder} is not a model folder")
    digest = hashlib.sha256()
    for rel, target in walk_files(root):
        content = f"link:{target}" if target is not None else sha256_file(root / rel)
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


def verify_model_files(run_dir: Path, model_path: str, artifacts: list[Artifact]) -> None:
    """Raises ModelIntegrityError unless every file of the model matches the record."""
    prefix = model_path.rstrip("/") + "/"
    recorded = {a["path"]: a["sha256"] for a in artifacts if a["path"].startswith(prefix)}
    if not recorded:
        raise ModelIntegrityError(f"model {model_path} has no files in the run record")
    for folder in (run_dir / model_path, (run_dir / model_path).parent):
        if folder.is_symlink():
            raise ModelIntegrityError(f"refusing to load {model_path}: {folder.name} is a "
                                      "symlink; nbops never follows links out of a run")
    walked = walk_files(run_dir / model_path)
    for rel, target in walked:
        if target is not None:
            raise ModelIntegrityError(f"refusing to load {model_path}: {rel} is a symlink (to "
                                      f"{target}); nbops never follows links out of a run")
    on_disk = {f"{prefix}{rel}" for rel, _ in walked}
    for extra in sorted(on_disk - set(recorded)):
        raise ModelIntegrityError(f"refusing to load {model_path}: {extra} is not in the run "
                                  "record (run 'nbops runs verify')")
    for path, digest in recorded.items():
        file = run_dir / path
        if not file.is_file():
            raise ModelIntegrityError(f"refusing to load {model_path}: {path} is missing")
        if sha256_file(file) != digest:
            raise ModelIntegrityError(f"refusing to load {model_path}: {path} changed since the "
                                      "run recorded it (sha256 mismatch); it will not be unpickled")


def load_verified(run_dir: Path, model_path: str, flavor: str,
                  artifacts: list[Artifact]) -> Any:
    """Load a model nbops wrote, after checking every file's sha256 against the record."""
    verify_model_files(run_dir, model_path, artifacts)
    import yaml

    spec = yaml.safe_load((run_dir / model_path / "MLmodel").read_text())
    flavors = spec.get("flavors", {})
    if flavor == "sklearn":
        import cloudpickle

        data = run_dir / model_path / flavors["sklearn"]["pickled_model"]
        with data.open("rb") as handle:
            return cloudpickle.load(handle)
    if flavor == "pytorch":
        import torch

        data = run_dir / model_path / flavors["pytorch"]["model_data"]
        target = data / "model.pth" if data.is_dir() else data
        return torch.load(target, weights_only=False)
    raise NbopsError(f"unknown model flavor {flavor!r}")
