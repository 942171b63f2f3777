"""Run records: the source of truth for what ran, on disk under ``runs/``.

- ``types``: the record shapes (TypedDicts, ``Status``); ``schema``: versioned JSON
  schemas, validated on every write and read (``schemas/*.v1.json``);
- ``store``: the run store (``runs/<id>/run.json``), ids, events;
- ``lifecycle``: new record, events folded in, finalize; ``integrity``: hashes, verify;
- ``mirror``: mirroring a finished record to the tracker, repairing a missed mirror;
- ``reconcile``: records whose runner died become ``killed``;
- ``queries``: get, list, load runs and their models; ``interactive``: runs by hand;
- ``pipelines``: pipeline records (``runs/pipelines/<id>.json``); ``sweeps``: sweep records
  (``runs/sweeps/<id>.json``).

Invariant: every file is written through a temp file, fsync and rename; a record on disk is
always schema-valid. Knows nothing of execution engines. Imports nothing at package level.
"""
