# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Stage `ab_evaluate`
#
# Join what `nbops serve` answered (its prediction log) with labels that arrived later, compare the champion with the challenger (split traffic) or the shadow (paired), and decide win / equivalent / inconclusive with a stated test and latency and error-rate guardrails. Only a win records a promotion proposal for the challenger.

# %% tags=["parameters"]
log_path: str = ""  # prediction log folder of nbops serve (runs/predictions/<model>; "" : a simulated shadow test on bundled data)
labels_path: str = ""  # labels that arrived later, CSV or Parquet with request_id, row (optional) and the label
label_column: str = "label"  # label column of the labels file
window: str = ""  # which logged rows: 6h, 7d or START/END in ISO 8601 ("" : all)
alpha: float = 0.05  # significance level of the test
margin: float = 0.01  # equivalence margin: accuracy points, or a share of the champion's RMSE
latency_margin: float = 0.2  # guardrail: challenger p95 latency at most this much above the champion's
latency_slack_ms: float = 10.0  # guardrail: ... plus this many milliseconds (smaller differences are noise)
error_margin: float = 0.01  # guardrail: challenger error rate at most this much above the champion's
propose: bool = True  # on a win, record a promotion proposal (champion alias) for the challenger
champion_version: int = 0  # the champion's version under test (0: from the log, where exactly two versions must have served the window)
challenger_version: int = 0  # the challenger's or shadow's version under test, never the champion's (0: from the log, likewise)

# %%
import json
import tempfile
from pathlib import Path

import pandas as pd

import nbops
from nbops.datasets import load_bundled, load_table
from nbops.serving.abtest import choose_versions, evaluate, join_labels, only_sides
from nbops.serving.predlog import read_log

# %% tags=["nbval-check-output"]
if not log_path:  # by hand: a champion and a shadow challenger answer the same bundled rows
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from nbops.serving.predlog import PredictionLog

    data = load_bundled("breast_cancer", "target").drop(columns=["segment"])
    train, live = data.iloc[:300], data.iloc[300:]
    features = [c for c in data.columns if c != "target"]
    champion_model = LogisticRegression(C=0.001, max_iter=200).fit(train[features], train["target"])
    challenger_model = RandomForestClassifier(50, random_state=0).fit(train[features], train["target"])
    folder = Path(tempfile.mkdtemp(prefix="nbops-ab-")) / "simulated"
    log = PredictionLog(folder)
    for i, (variant, model, version) in enumerate((("champion", champion_model, 1), ("shadow", challenger_model, 2))):
        for n, (row, prediction) in enumerate(zip(live[features].to_dict("records"), model.predict(live[features]), strict=True)):
            log.append([{"request_id": f"r{n}", "row": 0, "time": pd.Timestamp.now(tz="UTC").isoformat(), "model": "simulated", "version": version, "variant": variant, "latency_ms": 2.0 + i, "inputs": row, "prediction": int(prediction)}])
    log.close()
    log_path = str(folder)
    labels = pd.DataFrame({"request_id": [f"r{n}" for n in range(len(live))], label_column: live["target"].to_numpy()})
else:
    labels = load_table(labels_path)
logged = read_log(log_path, window)
sides = choose_versions(logged, champion_version, challenger_version)  # two different versions, or a ParameterError
champion_version, challenger_version = sides["champion"], sides["challenger"]
how = "as given" if sides["chosen"] == "parameters" else "the versions that served the window"
print(f"champion v{champion_version} against {sides['variant']} v{challenger_version} ({how})")
logged = only_sides(logged, sides)  # rows of other versions (before an alias moved) are not this test's
failures = only_sides(read_log(log_path, window, errors=True).query("_row == -1"), sides)
joined = join_labels(logged, labels, label_column)
print(f"{len(logged)} logged rows, {len(joined)} with labels, {len(failures)} failed requests")

# %% [markdown]
# ## Decision

# %%
result = evaluate(joined, failures, alpha=alpha, margin=margin, latency_margin=latency_margin, error_margin=error_margin, latency_slack_ms=latency_slack_ms)
variant = sides["variant"]
model_name = str(logged["_model"].iloc[0])
print(f"{result['decision'].upper()}: {result['reason']}")
print(f"{result['metric']}: champion {result['champion']:.4f}, {variant} {result['challenger']:.4f} "
      f"({result['test']}, p = {result['p_value']:.3g}, n = {result['n']})")
for name, guard in result["guardrails"].items():
    print(f"guardrail {name}: champion {guard['champion']:.4g}, {variant} {guard['challenger']:.4g}, "
          f"limit {guard['limit']:.4g}: {'ok' if guard['ok'] else 'FAILED'}")
Path("ab.json").write_text(json.dumps({**result, "champion_version": champion_version, "challenger_version": challenger_version, "versions_from": sides["chosen"]}, indent=2, default=str))
nbops.log_artifact("ab.json")
Path("ab.json").unlink()
nbops.log_metric("champion_metric", result["champion"])
nbops.log_metric("challenger_metric", result["challenger"])
nbops.log_metric("p_value", result["p_value"])

# %%
proposal = False
if result["decision"] == "win" and propose and model_name != "simulated":
    from nbops.tracking import ledger
    from nbops.tracking.uri import current_uri

    ledger.append(ledger.home(current_uri()), model_name, "proposal", "champion", int(challenger_version),
                  who="ab_evaluate", reason=result["reason"], evidence=[nbops.current_run_id()])
    proposal = True
    print(f"proposed {model_name} v{challenger_version} as champion (nbops models history {model_name})")
nbops.output("decision", result["decision"])
nbops.output("reason", result["reason"])
nbops.output("test", result["test"])
nbops.output("p_value", result["p_value"])
nbops.output("model_name", model_name)
nbops.output("champion_version", champion_version)
nbops.output("challenger_version", challenger_version)
nbops.output("versions_from", sides["chosen"])
nbops.output("proposal", proposal)
