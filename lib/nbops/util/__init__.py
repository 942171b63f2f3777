"""Small utilities with no nbops dependencies: files, environment, processes, registries.

Invariant: nothing here imports another nbops subpackage (only ``nbops.errors``).
"""
