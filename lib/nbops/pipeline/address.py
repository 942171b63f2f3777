"""What ``--dask`` names: a local cluster to start, or a running scheduler's address.

Pure parsing, no ``distributed`` import: the CLI checks the option before anything starts.
"""

from __future__ import annotations

import re
from typing import Literal, TypedDict

from ..errors import UsageError


class DaskTarget(TypedDict):
    """Where ``--dask`` sends tasks: a local cluster of ``workers`` processes, or a running
    scheduler's ``address``."""

    kind: Literal["local", "remote"]
    workers: int
    address: str


def parse_dask(text: str) -> DaskTarget:
    """``local:N`` (N >= 1 process workers here) or a scheduler address
    (``tcp://host:port``, ``host:port``, ``tls://...``).

    Raises:
        UsageError: anything else (the message shows both accepted forms).
    """
    text = text.strip()
    hint = "use local:N (N >= 1 worker processes here) or a scheduler address such as " \
           "tcp://host:8786"
    if text.startswith("local"):
        match = re.fullmatch(r"local:(\d{1,4})", text)
        if not match or int(match.group(1)) < 1:
            raise UsageError(f"--dask {text!r}: N must be a whole number >= 1; {hint}")
        return {"kind": "local", "workers": int(match.group(1)), "address": text}
    if not re.fullmatch(r"([a-z]+://)?[\w.\-\[\]:]+:\d{1,5}", text):
        raise UsageError(f"--dask {text!r} is not a scheduler address; {hint}")
    return {"kind": "remote", "workers": 0, "address": text}
