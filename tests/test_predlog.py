"""The prediction log on its own: rotation bounds it on disk, sampling, windows, torn lines."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nbops.serving.predlog import PredictionLog, parse_window, read_log


def entry(i: int, when: datetime | None = None) -> dict:  # type: ignore[type-arg]
    return {"request_id": f"r{i}", "row": 0,
            "time": (when or datetime.now(timezone.utc)).isoformat(), "model": "m",
            "version": 1, "variant": "champion", "latency_ms": 1.0,
            "inputs": {"x": float(i), "text": "y" * 200}, "prediction": i % 2}


def test_rotation_keeps_the_log_under_its_size_bound(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_part_bytes=4_000, max_total_bytes=20_000)
    for i in range(500):
        log.append([entry(i)])  # type: ignore[list-item]
    log.close()
    parts = sorted(tmp_path.glob("part-*.jsonl"))
    assert len(parts) > 1 and all(p.stat().st_size <= 4_000 for p in parts)
    assert sum(p.stat().st_size for p in parts) <= 20_000 + 4_000
    frame = read_log(tmp_path)
    assert frame["x"].iloc[-1] == 499.0  # the newest rows are kept, the oldest rotated out
    assert log.dropped == 0


def test_sampling_keeps_about_the_share_asked_for(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, sample=0.25)
    kept = sum(log.wanted() for _ in range(4000))
    log.close()
    assert 800 < kept < 1200
    with pytest.raises(ValueError, match="between 0 and 1"):
        PredictionLog(tmp_path, sample=1.5)


def test_windows_and_a_line_being_written(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    log = PredictionLog(tmp_path)
    log.append([entry(1, now - timedelta(hours=3)), entry(2, now)])  # type: ignore[list-item]
    log.close()
    part = next(tmp_path.glob("part-*.jsonl"))
    with part.open("a") as handle:
        handle.write('{"request_id": "half')  # a writer mid-line: not read
    assert list(read_log(tmp_path)["x"]) == [1.0, 2.0]
    assert list(read_log(tmp_path, "1h")["x"]) == [2.0]
    start = (now - timedelta(hours=4)).isoformat()
    end = (now - timedelta(hours=2)).isoformat()
    assert list(read_log(tmp_path, f"{start}/{end}")["x"]) == [1.0]
    for bad in ("yesterday", "5 hours", "1w"):
        with pytest.raises(ValueError, match="cannot read window"):
            parse_window(bad)
    with pytest.raises(ValueError, match="no prediction log"):
        read_log(tmp_path / "nope")
