"""Concurrent MLflow writers: how often "database is locked" hits two runs logging at once.

Two (or ``--writers``) processes each open a run and log ``--batches`` metric batches as fast as they
can, as two pipeline runs' stages would: (a) both straight into one SQLite file (what `make run` or
`python -m pipelines.flow` does with the default store), (b) both through one `mlflow server` on that
file (what `make ui` sets up: the server is the single writer). Errors are counted, not raised: our
tracking layer turns the first error off for the rest of the run, so any error is lost data.

    python bench/mlflow_writers.py [--writers 2] [--batches 200] [--json PATH]
"""

# ruff: noqa: E402  (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# bench/ first on sys.path would let bench/tokenize.py shadow the standard library's tokenize
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:  # run as a script
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

WRITER = r"""
import sys, time, mlflow
from mlflow.tracking import MlflowClient
uri, exp_id, batches, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
client = MlflowClient(uri)
errors, t0 = [], time.perf_counter()
try:
    run = client.create_run(exp_id, run_name=tag)
except Exception as e:
    print(f"{tag} ERR create {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)
    sys.exit(0)
from mlflow.entities import Metric
for i in range(batches):
    try:
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(f"m{k}", float(i), now, i) for k in range(20)])
    except Exception as e:
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
try:
    client.set_terminated(run.info.run_id)
except Exception as e:
    errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
print(f"{tag} OK {len(errors)} {time.perf_counter() - t0:.2f}", flush=True)
for e in sorted(set(errors)):
    print(f"{tag} ERR {e}", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_writers(uri: str, exp_id: str, writers: int, batches: int) -> dict:
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, exp_id, str(batches), f"w{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(writers)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    failed, messages = 0, set()
    for out in outs:
        for line in out.splitlines():
            parts = line.split(" ", 3)
            if parts[1] == "OK":
                failed += int(parts[2])
            elif parts[1] == "ERR":
                messages.add(parts[-1])
                if "create" in line:
                    failed += batches
    return {
        "writers": writers,
        "batches_per_writer": batches,
        "failed_batches": failed,
        "failed_fraction": failed / (writers * batches),
        "wall_s": round(wall, 2),
        "errors": sorted(messages)[:5],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("sqlite", "server"):
            db = Path(tmp) / f"{mode}.db"
            sqlite_uri = f"sqlite:///{db}"
            exp_id = MlflowClient(sqlite_uri).create_experiment("bench", artifact_location=f"{tmp}/art")
            server = None
            uri = sqlite_uri
            if mode == "server":
                port = _free_port()
                server = subprocess.Popen(
                    [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", sqlite_uri,
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                    env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                )  # fmt: skip
                uri = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 120
                while True:
                    try:
                        urllib.request.urlopen(f"{uri}/health", timeout=2)  # noqa: S310 - local
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "mlflow server did not start"
                        time.sleep(0.5)
            try:
                results[mode] = _run_writers(uri, exp_id, args.writers, args.batches)
            finally:
                if server is not None:
                    os.killpg(server.pid, 15)
                    server.wait()
    print(f"{'store':<8} {'writers':>7} {'batches':>8} {'failed':>7} {'failed %':>9} {'wall s':>7}")
    for mode, r in results.items():
        print(
            f"{mode:<8} {r['writers']:>7} {r['writers'] * r['batches_per_writer']:>8} {r['failed_batches']:>7} "
            f"{100 * r['failed_fraction']:>8.1f}% {r['wall_s']:>7.1f}"
        )
        for e in r["errors"]:
            print(f"         {e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
