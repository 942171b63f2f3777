"""The template contract: what a template declares and what a run may be given.

- ``types``: the admitted parameter types and conversion to them;
- ``template``: reading a template notebook (parameters cell, ``nbops`` metadata), finding
  templates by name;
- ``params``: merging parameter sources, validating against the contract, rendering the
  injected cell.

Invariant: nothing here starts a kernel or writes a file; every check runs before a run
exists. Depends only on ``nbops.errors``. The package itself imports nothing: import the
module you need (``from nbops.contract.template import resolve``), so that light users
(the in-kernel API uses ``types``) never pay for nbformat.
"""
