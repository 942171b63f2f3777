"""Serving models over HTTP, and what that leaves behind for monitoring.

- ``model``: which model (``name@alias``, ``name/version``, ``runs:/RUN_ID/NAME``), loaded
  through the integrity-checked loader, with its signature and input example;
- ``inputs``: request bodies (MLflow's formats) → a checked DataFrame, or a 4xx naming the
  field;
- ``predlog``: the prediction log (append-only JSONL parts, sampled, rotated) and reading a
  time window of it back for the monitor stage;
- ``app``: the FastAPI app: limits, variants (champion, challenger split, shadow), hot swap
  when an alias moves, Prometheus metrics.

Invariant: the server never loads a model whose files differ from their run record, and no
bad request changes its state (the process, the loaded models, the log's earlier lines).
Importing the package imports neither FastAPI nor MLflow.
"""
