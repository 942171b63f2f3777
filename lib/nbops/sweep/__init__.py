"""Sweeps and hyperparameter search: many runs of one template, the best one chosen.

- ``space``: choices and ranges, parsed against the template's contract;
- ``spec``: a checked sweep (strategy, space, metric, fixed parameters, trial cap) from
  the command line or a pipeline ``sweep:`` block;
- ``strategies``: grid, seeded random, Optuna ask-and-tell; ``select``: the best trial;
- ``watch``: intermediate values of running trials (never a trial's newest value);
- ``pruning``: which running trials Optuna prunes, and the tag of a pruned trial's run;
- ``driver``: the sweep run (cache, scheduler, pruning, sweep record, MLflow parent);
- ``stage``: a pipeline stage with a ``sweep:`` block; ``plot``: the picture.

Layering: above ``pipeline`` (uses its scheduler, stage tasks and cache), below ``cli``.
Imports nothing at package level.
"""
