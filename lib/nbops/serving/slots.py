"""One served variant (champion, challenger or shadow) and its hot swap.

A slot holds the model it serves now; when its alias moves, the new version is loaded,
verified and warmed off the request path and swapped in atomically (one attribute
assignment: a request keeps the model it started with). A version that fails to load or
warm is not swapped in; ``swap_error`` says why until the alias moves again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypedDict

from .inputs import check
from .model import LoadedModel, ModelRef, load, resolve_version

if TYPE_CHECKING:
    from .config import ServeConfig

LOG = logging.getLogger("nbops.serve")


class SwapError(TypedDict):
    version: int | None
    error: str
    at: str


class Slot:
    """One variant: the model it serves now, swapped atomically when its alias moves."""

    def __init__(self, variant: str, ref: ModelRef, config: ServeConfig) -> None:
        self.variant, self.ref, self.config = variant, ref, config
        self.current: LoadedModel | None = None
        self.swap_error: SwapError | None = None
        self.swaps = 0

    def load_first(self) -> None:
        self.current = self._load(None)

    def _load(self, version: int | None) -> LoadedModel:
        model = load(self.ref, self.config.runs_dir, self.config.tracking_uri, version)
        if model.example is not None:  # warm: the first real request is not the slow one
            frame, _ = check(model.example, model.columns, allow_extra=True)
            model.predict(frame)
        return model

    def poll(self) -> bool:
        """Swap in the version the alias points to now, if it moved; True if swapped."""
        if not self.ref.follows_alias or self.current is None:
            return False
        try:
            version = resolve_version(self.ref, self.config.tracking_uri)
        except Exception as exc:  # the registry being unreachable is not fatal
            self._failed(None, exc)
            return False
        if version == self.current.identity["version"]:
            return False
        if self.swap_error and self.swap_error["version"] == version:
            return False  # already failed: wait for the alias to move again
        try:
            fresh = self._load(version)
        except Exception as exc:
            self._failed(version, exc)
            return False
        old = self.current.identity["version"]
        self.current, self.swap_error = fresh, None
        self.swaps += 1
        LOG.warning("%s: swapped %s v%s -> v%s", self.variant, self.ref.name, old, version)
        return True

    def _failed(self, version: int | None, exc: Exception) -> None:
        self.swap_error = {"version": version, "error": f"{type(exc).__name__}: {exc}",
                           "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        LOG.error("%s: not swapping to %s v%s: %s", self.variant, self.ref.name, version, exc)
