"""Serving models over HTTP, and what that leaves behind for monitoring.

- ``model``: which model (``name@alias``, ``name/version``, ``runs:/RUN_ID/NAME``), loaded
  through the integrity-checked loader, with its signature and input example;
- ``inputs``: request bodies (MLflow's formats) → a checked DataFrame, or a 4xx naming the
  field;
- ``predlog``: the prediction log (append-only JSONL parts, sampled, rotated) and reading a
  time window of it back for the monitor stage;
- ``config``: the server's settings (one JSON-able object for every worker process);
- ``slots``: one variant (champion, challenger, shadow) and its hot swap when an alias moves;
- ``server``: requests without HTTP: limits, variant choice, timeouts and what they stop,
  who is at fault for an error (client, model, server), the shadow, ``/ready``'s details;
- ``metrics``: the Prometheus metrics;
- ``app``: the FastAPI adapter (routes, the body read within its size limit).

Invariant: the server never loads a model whose files differ from their run record, and no
bad request changes its state (the process, the loaded models, the log's earlier lines) or
counts as a failure of a model; the work a request causes is bounded by the server's
limits before anything of the request's size is built.
Importing the package imports neither FastAPI nor MLflow.
"""
