"""``nbops demo loop``: the closed loop end to end on this machine, in a few minutes.

In a project folder of its own, the demo (1) runs the lifecycle pipeline once (prepare on
scikit-learn's bundled breast-cancer data → train → evaluate → register: champion v1);
(2) writes the project's policy: the loop's, and a promotion policy under which a new
champion needs an A/B win on live traffic (``evidence: [ab_win]``); (3) starts ``nbops
serve`` for the champion on a loopback port with the ``challenger`` alias as a shadow,
both polled every second; (4) for each window sends simulated traffic drawn from the same
data (from the third window on, a recalibrated sensor reads three size features 3
standard deviations high, so the champion misreads some tumours; from the sixth on, a
second fault puts six more features 2 standard deviations high: large drift), then writes
that window's labels (they arrive after the predictions were served); (5) runs a loop
tick after each window; (6) stops the server, prints a timeline (drift share, action,
decision, retrain, the challenger's trial and A/B verdict, promotions, the version that
served the window) and writes a plot.

Every tick is a real cycle (``runs/loop/cycles``): a monitor run on the window; on
moderate drift a retrain on fresh data (the first reference plus the labelled traffic)
through the same pipeline, on large drift the experiment pipeline (a sweep over three
model families, the best by cross-validated accuracy), whose register stage finds the new
version better on the new holdout but is held back by the policy, so the version goes on
trial as the shadow; at the next tick the ``ab_evaluate`` template tests it against the
champion on the rows both answered (McNemar's exact test), and a win promotes it (the
server swaps by itself) and rotates the drift reference to the traffic the trial saw.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml

from ..errors import NbopsError
from ..records.types import CycleRecord
from .config import parse
from .tick import tick
from .trial import describe as describe_trial

MODEL = "nbops-demo"
SHIFTED = ("mean radius", "mean texture", "mean perimeter")
# from window 5 on, a second sensor fault: six more features read high (large drift)
WIDER = ("worst radius", "worst texture", "worst perimeter", "mean area", "worst area",
         "mean concavity")
STAGES: dict[str, Any] = {
    "prepare": {"template": "prepare", "parameters": {"dataset": "breast_cancer"}},
    "train": {"template": "train", "parameters": {
        "train_path": "${prepare.outputs.train_path}", "model": "logreg"}},
    "evaluate": {"template": "evaluate", "parameters": {
        "model_path": "${train.outputs.model_path}", "test_path": "${prepare.outputs.test_path}",
        "thresholds": {"accuracy": 0.8}}},
    "register": {"template": "register", "parameters": {
        "model_name": MODEL, "model_path": "${evaluate.outputs.model_path}",
        "verdict": "${evaluate.outputs.verdict}", "test_path": "${prepare.outputs.test_path}",
        "test_sha256": "${prepare.outputs.test_sha256}",
        "train_sha256": "${prepare.outputs.train_sha256}",
        "train_run": "${train.outputs.train_run}",
        "evaluate_run": "${evaluate.outputs.evaluate_run}"}}}
PIPELINE = {"name": "loop-demo", "stages": STAGES}

# large drift goes back to experimentation: a sweep over model families, the best by
# cross-validated accuracy on the fresh data, then the same evaluate and register
EXPERIMENT = {"name": "loop-demo-experiment", "stages": {
    **STAGES,
    "train": {"template": "train", "parameters": {
        "train_path": "${prepare.outputs.train_path}", "model": "logreg", "cv_folds": 5},
        "sweep": {"grid": {"model": ["logreg", "random_forest", "gradient_boosting"]},
                  "maximize": "cv_accuracy"}}}}


CAUSES = {"performance": "accuracy fell", "age": "model age", "schedule": "schedule"}


class Window(TypedDict):
    """One window of the demo's timeline."""

    window: int
    status: str  # the cycle's
    shift: float  # in standard deviations of the three shifted features
    wider: float  # ... and of six more (the second fault)
    rows: int
    served_by: list[str]  # versions that answered (X-Model-Version)
    cycle: str
    share: float | None
    action: str | None
    decision: str
    retrain: str | None  # pipeline run id
    registered: int | None
    promoted: str | None  # "v1 -> v2"
    trial: str | None  # the challenger's trial in this cycle (A/B verdict), in words
    reference_rotated: bool


@dataclass
class DemoOptions:
    folder: Path
    windows: int = 8
    rows: int = 120  # requests per window (one row each)
    shifts: list[float] = field(default_factory=list)  # default: ``default_shifts``
    wider: list[float] = field(default_factory=list)  # default: ``default_wider``
    seed: int = 0
    report: Callable[[str], None] | None = None


def default_shifts(windows: int) -> list[float]:
    """No drift for the first two windows, then a step of 3 standard deviations that stays
    (a sensor recalibrated)."""
    return [0.0 if i < 2 else 3.0 for i in range(windows)]


def default_wider(windows: int) -> list[float]:
    """From window 5 on, six more features read 2 standard deviations high."""
    return [0.0 if i < 5 else 2.0 for i in range(windows)]


def run_demo(opts: DemoOptions) -> list[Window]:
    """Run the demo in ``opts.folder`` (made if needed; must not hold an earlier demo)."""
    say = opts.report or (lambda _: None)
    shifts = opts.shifts or default_shifts(opts.windows)
    wider = opts.wider or default_wider(len(shifts))
    if len(wider) != len(shifts):
        raise NbopsError(f"give as many wider shifts ({len(wider)}) as shifts ({len(shifts)})")
    folder = opts.folder.resolve()
    if (folder / "nbops.yaml").exists():
        raise NbopsError(f"{folder} already holds a project (nbops.yaml); give an empty or "
                         "new folder with --dir")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    runs = folder / "runs"
    pipeline = folder / "lifecycle.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (folder / "experiment.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    say(f"demo project: {folder}")
    reference = _first_champion(pipeline, runs, say)
    (folder / "nbops.yaml").write_text(yaml.safe_dump({"name": "loop-demo", "loop": {
        "model": MODEL, "retrain": "lifecycle.yaml", "experiment": "experiment.yaml",
        "reference": str(reference),
        "monitor": {"parameters": {"policy_measure": "share"}},
        # the simulated traffic is drawn from the data the models train on, so their
        # evaluations on fresh holdouts read high (near 1.0): only a large drop counts
        "triggers": {"min_new_rows": max(1, opts.rows // 2), "accuracy_drop": 0.15,
                     "accuracy_rows": max(1, opts.rows // 2)},
        "limits": {"cooldown": "0s", "max_per_day": 24},
        "fresh_data": {"parameter": "prepare.data_path", "labels": "labels"},
        # the shadow shares this 2-core machine with the server: its latency is no guide
        "challenger": {"min_labelled": max(1, opts.rows // 2), "latency_margin": 1.0}},
        "promotion": {"champion": {"evidence": ["ab_win"]}}}, sort_keys=False))
    cfg = parse(yaml.safe_load((folder / "nbops.yaml").read_text())["loop"], folder)
    data = _traffic_source()
    server = Server(runs, folder / "server.log")
    timeline: list[Window] = []
    try:
        server.start()
        say(f"serving {MODEL}@champion on {server.base}")
        for number, (shift, more) in enumerate(zip(shifts, wider, strict=True)):
            batch = _window(data, shift, more, opts.rows, opts.seed + number)
            served = server.send(batch, prefix=f"w{number}")
            # the labels arrive after the answers (the join is by request id)
            batch[["request_id", "target"]].to_csv(folder / "labels" / f"window-{number}.csv",
                                                   index=False)
            say(f"window {number}: {len(batch)} requests, shift {shift:.2f} sd"
                + (f" (and {more:.2f} sd on six more features)" if more else "") + ", served by "
                f"{', '.join(served)}")
            found = tick(cfg, runs_dir=runs, tracking_uri=None, trigger="cli")
            if found.cycle is None:
                raise NbopsError("another loop tick holds this project's lease")
            timeline.append(_row(number, (shift, more), len(batch), served, found.cycle))
            say(f"  {describe(timeline[-1])}")
            server.follow(found.cycle)
    finally:
        server.stop()
    return timeline


def _first_champion(pipeline: Path, runs: Path, say: Callable[[str], None]) -> Path:
    """Run the lifecycle once: champion v1 and its drift reference."""
    from ..pipeline.run import PipelineOptions
    from ..records.queries import get_record
    from ..sweep.stage import run_pipeline_with_sweeps

    say("training the first champion (prepare, train, evaluate, register)")
    record = run_pipeline_with_sweeps(pipeline, PipelineOptions(runs_dir=runs))
    if record["status"] != "succeeded":
        raise NbopsError(f"the first pipeline run {record['id']} ended {record['status']}: "
                         f"{record['error']}")
    prepared = get_record(str(record["stages"]["prepare"]["run_id"]), runs)
    return Path(str(prepared["outputs"]["reference_path"]))


def _traffic_source() -> Any:
    from ..datasets import load_bundled

    return load_bundled("breast_cancer")  # the columns the champion was trained on


def _window(data: Any, shift: float, wider: float, rows: int, seed: int) -> Any:
    """``rows`` rows drawn from the data, three features shifted by ``shift`` sd and six
    more by ``wider`` sd."""
    batch = data.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    for columns, by in ((SHIFTED, shift), (WIDER, wider)):
        for column in columns:
            batch[column] = batch[column] + by * data[column].std()
    batch.insert(0, "request_id", [f"s{seed}-{i}" for i in range(rows)])
    return batch


def _row(number: int, shifts: tuple[float, float], rows: int, served: list[str],
         cycle: CycleRecord) -> Window:
    drift, decision, outcome = cycle["drift"], cycle["decision"], cycle["outcome"]
    decided = "-" if decision is None else (
        f"{decision['action']}"
        + (f" ({CAUSES[decision['cause']]})" if decision["cause"] in CAUSES else "")
        + (f" (blocked: {decision['blocked']})" if decision["blocked"] else ""))
    promoted = None
    if outcome and outcome["promoted"]:
        before = f"v{outcome['champion_before']}" if outcome["champion_before"] else "(none)"
        promoted = f"{before} -> v{outcome['champion_after']}"
    trial = cycle.get("trial")
    if trial and trial["status"] == "promoted":
        promoted = f"v{trial['champion']} -> v{trial['version']}"
    return {"window": number, "status": cycle["status"], "shift": shifts[0],
            "wider": shifts[1], "rows": rows,
            "served_by": served,
            "cycle": cycle["id"], "share": drift["share"] if drift else None,
            "action": drift["action"] if drift else None, "decision": decided,
            "retrain": cycle["pipeline_run"],
            "registered": outcome["version"] if outcome else None, "promoted": promoted,
            "trial": describe_trial(trial, cycle["id"]) if trial else None,
            "reference_rotated": cycle["reference"]["rotated_to"] is not None}


def describe(row: Window) -> str:
    share = f"{row['share']:.1%}" if row["share"] is not None else "-"
    return f"drift {share} -> {row['action'] or 'not measured'}; {_outcome(row)}"


def _outcome(row: Window) -> str:
    parts = [row["decision"]]
    if row["retrain"]:
        parts.append(f"retrain registered v{row['registered']}")
    if row["trial"]:
        parts.append(row["trial"])
    if row["promoted"]:
        parts.append(f"promoted {row['promoted']}, reference rotated")
    elif row["retrain"] and not row["trial"]:
        parts.append("champion kept")
    return "; ".join(parts)


def timeline_text(rows: list[Window]) -> str:
    head = (f"{'window':>6} {'shift':>6} {'wider':>6} {'served by':>10} {'drift':>7} "
            f"{'action':>10}  outcome")
    lines = [head]
    for row in rows:
        share = f"{row['share']:.1%}" if row["share"] is not None else "-"
        outcome = _outcome(row)
        lines.append(f"{row['window']:>6} {row['shift']:>6.2f} {row['wider']:>6.2f} "
                     f"{','.join(row['served_by']):>10} {share:>7} "
                     f"{row['action'] or '-':>10}  {outcome}")
    return "\n".join(lines)


def plot(rows: list[Window], path: Path) -> Path:
    """Drift share per window over the policy's tiers, retrains and promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..drift.report import Policy

    policy = Policy()
    fig, ax = plt.subplots(figsize=(8, 4))
    top = max([0.2] + [(r["share"] or 0) * 1.2 for r in rows])
    colours = {"none": "#e8f5e9", "warn": "#fff8e1", "retrain": "#ffe0b2",
               "experiment": "#ffcdd2"}
    for low, high, action in policy.bands(top):
        ax.axhspan(low, high, color=colours.get(action, "#eeeeee"), zorder=0)
        ax.text(len(rows) - 0.6, (low + high) / 2, action, va="center", fontsize=8)
    xs = [r["window"] for r in rows]
    ax.plot(xs, [r["share"] if r["share"] is not None else float("nan") for r in rows],
            marker="o", color="#1f4e79", label="share of drifted features")
    for r in rows:
        if r["promoted"]:
            ax.axvline(r["window"], color="#2e7d32", linestyle="--")
            ax.text(r["window"], top * 0.95, f"promoted {r['promoted']}", rotation=90,
                    va="top", fontsize=8, color="#2e7d32")
        elif r["retrain"] and r["trial"]:  # registered, held back: on trial as the shadow
            ax.axvline(r["window"], color="#ef6c00", linestyle="-.")
            ax.text(r["window"], top * 0.95, f"v{r['registered']} on trial", rotation=90,
                    va="top", fontsize=8, color="#ef6c00")
        elif r["retrain"]:  # the register stage kept the champion
            ax.axvline(r["window"], color="#c62828", linestyle=":")
    ax.set_xlabel("window")
    ax.set_ylabel("share of drifted features")
    ax.set_ylim(0, top)
    ax.set_title("nbops demo loop: drift, retrains and promotions")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class Server:
    """``nbops serve`` for the champion, on a free loopback port, in a child process."""

    def __init__(self, runs: Path, log: Path) -> None:
        self.runs, self.log = runs, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self, timeout: float = 120.0) -> None:
        import httpx

        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "NBOPS_RUNS_DIR": str(self.runs)}
        env.pop("MLFLOW_TRACKING_URI", None)  # the demo's embedded store
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbops", "serve", f"{MODEL}@champion", "--shadow",
                 f"{MODEL}@challenger", "--host",
                 "127.0.0.1", "--port", str(port), "--poll-seconds", "1", "--runs-dir",
                 str(self.runs)], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NbopsError(f"nbops serve exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise NbopsError(f"nbops serve was not ready within {timeout:g} s; see {self.log}")

    def send(self, batch: Any, prefix: str) -> list[str]:
        """One request per row (its request id set, so labels can be joined later); the
        versions that answered."""
        import httpx

        features = batch.drop(columns=["request_id", "target"])
        versions: list[str] = []
        with httpx.Client(timeout=30) as client:
            for i, request_id in enumerate(batch["request_id"]):
                row = features.iloc[[i]]
                body = {"dataframe_split": {"columns": list(row.columns),
                                            "data": row.to_numpy().tolist()}}
                answer = client.post(f"{self.base}/invocations", json=body,
                                     headers={"X-Request-ID": str(request_id)})
                if answer.status_code != 200:
                    raise NbopsError(f"the server answered {answer.status_code}: "
                                     f"{answer.text[:200]}")
                version = f"v{answer.headers.get('x-model-version', '?')}"
                if version not in versions:
                    versions.append(version)
        return versions

    def follow(self, cycle: CycleRecord) -> None:
        """Until the server serves what the cycle left the aliases at (it polls them)."""
        trial, outcome = cycle.get("trial"), cycle["outcome"]
        if outcome and outcome["promoted"]:
            self.wait_for("champion", outcome["champion_after"])
        if trial and trial["status"] == "promoted":
            self.wait_for("champion", trial["version"])
        if trial and trial["status"] == "open":
            self.wait_for("shadow", trial["version"])
        if trial and trial["status"] == "refused":
            self.wait_for("shadow", trial["champion"])

    def wait_for(self, variant: str, version: int | None, timeout: float = 60.0) -> None:
        """Until the server's ``variant`` answers with ``version`` (it polls the alias)."""
        import httpx

        deadline = time.monotonic() + timeout
        while version is not None and time.monotonic() < deadline:
            found = httpx.get(f"{self.base}/version", timeout=5).json()
            if (found.get(variant) or {}).get("version") == version:
                return
            time.sleep(0.5)
        if version is not None:
            raise NbopsError(f"the server's {variant} did not swap to v{version} within "
                             f"{timeout:g} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
