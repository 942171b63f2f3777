"""HTTP serving: nbops serve against mlflow models serve on the same model, side by side.

Trains the lifecycle's logistic regression (the `train` template, bundled data) once, then
starts both servers on loopback with one worker each, and sends the same requests to each
in turn: REQUESTS single-row `dataframe_split` bodies (the online case) from CONCURRENCY
client threads, then BATCH-row bodies. Prints throughput and p50/p99 latency of each and
the ratios. nbops serve runs with its prediction log on (it does more work per request);
both load the model the same way (cloudpickle, scikit-learn).

    .venv/bin/python bench/serve.py [--requests 2000] [--concurrency 16] [--batch 100]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({url})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready: {url}")


def load(url: str, body: bytes, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """Requests per second and the latency of each request (seconds)."""
    latencies: list[float] = []
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        def one(_: int) -> None:
            start = time.perf_counter()
            answer = client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - start)
            if answer.status_code != 200:
                raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")

        for i in range(min(50, requests)):  # warm up
            one(i)
        latencies.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - start
    return requests / elapsed, latencies


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbops-bench-serve-"))
    runs = work / "runs"
    done = subprocess.run([str(BIN / "nbops"), "run", "train", "--runs-dir", str(runs),
                           "--tracking-uri", "none", "--json"], cwd=work,
                          capture_output=True, text=True, check=True)
    record = json.loads(done.stdout)
    model_dir = Path(record["outputs"]["model_path"])
    example = json.loads((model_dir / "input_example.json").read_text())
    columns, row = example["columns"], example["data"][0]
    bodies = {"1 row": json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}),
              f"{args.batch} rows": json.dumps({"dataframe_split": {
                  "columns": columns, "data": [row] * args.batch}})}
    # mlflow runs "uvicorn" from PATH
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    servers = {}
    nbops_port, mlflow_port = free_port(), free_port()
    servers["nbops serve"] = (subprocess.Popen(
        [str(BIN / "nbops"), "serve", f"runs:/{record['id']}/model", "--runs-dir", str(runs),
         "--port", str(nbops_port), "--max-concurrency", "256"], cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env), nbops_port)
    servers["mlflow models serve"] = (subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager",
         "local", "--port", str(mlflow_port), "--workers", "1"], cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env), mlflow_port)
    try:
        for name, (proc, port) in servers.items():
            wait_ready(f"http://127.0.0.1:{port}/" + ("ready" if name.startswith("nbops")
                                                      else "ping"), proc)
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
              f"{args.requests} requests, {args.concurrency} at a time, one worker each")
        for label, body in bodies.items():
            results = {}
            for name, (_, port) in servers.items():
                rps, latencies = load(f"http://127.0.0.1:{port}/invocations", body.encode(),
                                      args.requests, args.concurrency)
                results[name] = (rps, quantile(latencies, 0.5), quantile(latencies, 0.99))
                print(f"  {label:>9} {name:<20} {rps:8.0f} req/s  p50 {results[name][1]*1000:6.1f}"
                      f" ms  p99 {results[name][2]*1000:6.1f} ms")
            ours, theirs = results["nbops serve"], results["mlflow models serve"]
            print(f"  {label:>9} nbops / mlflow: throughput {ours[0] / theirs[0]:.2f}x "
                  f"(target >= 1), p99 {ours[2] / theirs[2]:.2f}x (target <= 1)")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
