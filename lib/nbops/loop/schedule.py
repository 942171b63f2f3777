"""The slots of ``nbops loop run --every``: fixed from the start, missed ones coalesced.

Slots are at ``start + k * every``. A tick that overran one or more slots is followed at
once by a single tick standing for all of them (the later slots it missed are counted as
coalesced), then the schedule goes on at the next slot ahead: never a burst of catch-up
ticks (a machine that slept for a day ticks once on waking).
"""

from __future__ import annotations


def plan(start: float, every: float, last: int, now: float) -> tuple[int, float, int]:
    """After slot ``last`` ticked: (the next slot, when to tick for it, how many earlier
    slots that tick stands for and were skipped)."""
    if every <= 0:
        raise ValueError("every must be positive")
    due = last + 1
    due_at = start + due * every
    if now < due_at:
        return due, due_at, 0
    latest = int((now - start) // every)  # the newest slot already due
    return latest, now, latest - due
