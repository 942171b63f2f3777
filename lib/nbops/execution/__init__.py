"""Execution: run one parameterized notebook in a kernel and tell the truth about it.

- ``base``: the :class:`~nbops.execution.base.Executor` base class (supervision, deadlines,
  stop requests, cell tracking) and the request it takes;
- ``outcome``: the status derived from what actually executed (pure functions);
- ``papermill``: the papermill engine (the only module that knows papermill or nbclient);
- ``pool``: warm kernels (the ``pool`` and ``reuse`` executors), forked from a ``zygote``
  (a process that imported the templates' modules once; ``forking`` is its driver side);
- ``registry``: executors by name (``papermill`` built in; entry points ``nbops.executors``).

Invariant: an executor never raises for what happens inside the notebook; it returns an
``ExecutionResult`` and leaves no kernel process behind. It knows nothing of run records or
tracking.
"""
