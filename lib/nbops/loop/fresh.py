"""The data a loop retrain trains on: the base table plus the labelled recent traffic.

Labels arrive after the predictions, as CSV or Parquet files in the configured folder
(``request_id``, optionally ``row``, and the target column). At a retrain, every row the
prediction log holds within ``fresh_data.window`` (all of it by default) is joined with the
labels that exist now, so a row whose label came late is still used; the rows with a label
are appended to the base table (``fresh_data.base``, else the loop's first reference: never
a rotated one, which already holds earlier traffic) with the same columns, and the result
is written to ``runs/loop/data/<cycle>.parquet`` for the retrain pipeline's data parameter.

Invariants: a file is written whole (temp + rename) and its sha256 goes into the cycle
record; rows without a label never enter training; a window row's column set must cover
the base table's feature columns (a schema change is an error naming the columns, not a
table with holes); the base table is never modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets import load_table
from ..errors import ConfigError, NbopsError
from ..records.types import CycleData
from ..serving.abtest import join_labels
from ..serving.predlog import META, read_log
from ..util.files import atomic_write_bytes, sha256_bytes

FOLDER = "loop/data"


FreshData = CycleData  # what a retrain trained on (the cycle record's ``data``)


def labels_of(folder: Path) -> Any:
    """Every label file in ``folder`` (CSV or Parquet), concatenated; None when none."""
    import pandas as pd

    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".csv", ".parquet"))
    frames = [load_table(p) for p in files]
    return pd.concat(frames, ignore_index=True) if frames else None


def build(*, base: Path, log: Path, labels: Path, target: str, since: str | None,
          until: str, out_dir: Path, name: str) -> FreshData:
    """Write the training table of a retrain and describe it.

    Raises:
        ConfigError: the base table lacks the target, or the labelled rows lack a feature.
    """
    import pandas as pd

    table = load_table(base)
    if target not in table.columns:
        raise ConfigError(f"the loop's base table {base} has no target column {target!r}")
    window = _labelled_window(log, labels, target, since, until)
    if window is not None and len(window):
        missing = [c for c in table.columns if c not in window.columns]
        if missing:
            raise NbopsError(f"the labelled traffic lacks column(s) {', '.join(missing)} of "
                             f"the base table {base}: the served inputs changed shape")
        table = pd.concat([table, window[list(table.columns)]], ignore_index=True)
    path = out_dir / f"{name}.parquet"
    data = table.to_parquet(index=False)
    atomic_write_bytes(path, data)
    return {"path": str(path), "sha256": sha256_bytes(data), "base": str(base),
            "base_rows": len(table) - (len(window) if window is not None else 0),
            "window_rows": len(window) if window is not None else 0,
            "since": since, "until": until}


def _labelled_window(log: Path, labels_dir: Path, target: str, since: str | None,
                     until: str) -> Any:
    """The logged rows in [since, until) that have a label now, as features + target."""
    labels = labels_of(labels_dir) if labels_dir.is_dir() else None
    if labels is None or not log.is_dir():
        return None
    try:
        logged = read_log(log, f"{since or ''}/{until}")
    except ValueError:  # no rows in the window
        return None
    logged = logged[logged["_variant"] != "shadow"]  # a shadow's rows repeat the champion's
    joined = join_labels(logged, labels, target)
    keep = [c for c in joined.columns if c not in META and c not in ("prediction", "_label")]
    frame = joined[keep].copy()
    frame[target] = joined["_label"].to_numpy()
    return frame
