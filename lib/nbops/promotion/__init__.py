"""Promotion with evidence and approvals, on top of the registry and the ledger.

- ``policy``: the project's promotion policy (``nbops.yaml``, found from the working
  directory upwards): per alias, which evidence a version needs and how many approvals;
- ``evidence``: what the run records say about a version (a passing evaluate verdict, an
  A/B win), as run ids;
- ``registration``: register a model folder once: a version already holding the same model
  (its files' sha256, the same run's model folder, the same MLflow source) is reused;
- ``service``: promote (policy-checked, compare-and-set), approve, roll back, and the
  registry as people read it (models, versions, lineage, alias history with moves made
  outside nbops marked unrecorded).

Invariant: an alias moves only through ``tracking.registry`` (so every move is in the
ledger), and only after the policy is satisfied; a blocked promotion moves nothing and
records a proposal instead.
"""
