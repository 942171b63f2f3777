"""The closed loop: watch the prediction log, decide under limits, retrain, record a cycle.

- ``config``: the ``loop:`` section of ``nbops.yaml`` (triggers, limits), checked;
- ``decide``: what one tick should do, from plain facts (pure);
- ``cycles``: cycle records (``runs/loop/cycles/<id>.json``) and the lease of a tick;
- ``tick``: one cycle end to end (monitor run, decision, retrain pipeline, outcome);
- ``schedule``: the slots of ``loop run --every``, missed ones coalesced (pure).
"""
