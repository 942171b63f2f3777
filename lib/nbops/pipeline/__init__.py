"""Pipelines: a DAG of stages in ``pipeline.yaml``, cached, resumable, concurrent.

- ``spec``: reading and checking ``pipeline.yaml`` (all errors before anything runs);
- ``cache``: cache keys from template, parameters and upstream content; cached runs;
- ``task``: :class:`~nbops.pipeline.task.StageTask`, one stage as picklable data;
- ``scheduler``: who runs stage tasks (``threads`` built in; entry points
  ``nbops.schedulers``);
- ``run``: the coordinator that walks the DAG and writes the pipeline record.

Invariant: every stage run is an ordinary run record; the pipeline record only points at
them. Imports nothing at package level.
"""
