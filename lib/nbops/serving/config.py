"""The server's settings: one JSON-able object, so worker processes can rebuild it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

CONFIG_ENV = "NBOPS_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Everything the server needs (the CLI options of ``nbops serve``, one for one)."""

    model: str
    challenger: str | None = None
    split: float = 0.0  # percent of requests for the challenger
    shadow: str | None = None
    runs_dir: str | None = None
    tracking_uri: str | None = None
    max_body_bytes: int = 8 * 2**20
    max_columns: int = 1000  # without a signature, or with extra columns allowed
    timeout: float = 30.0
    max_concurrency: int = 64
    allow_extra_columns: bool = False
    poll_seconds: float = 30.0
    log_predictions: bool = True
    log_sample: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
