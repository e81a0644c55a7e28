"""`make ui` end to end (pipelines/ui.py) on a micro copy of the repo: a real Prefect server, the MLflow
server and the served deployment, started and stopped by the test; runs triggered with
`run_deployment` (the call the UI's form makes) with parameter overrides.

Shows: the overrides reach the params of each run's DVC experiment; every stage is a task run; two runs
triggered at once are queued and both finish with their own results, the workspace untouched; MLflow
(through the server) has each flow's parent run and the stages' child runs, tagged; bad form input is
refused before any stage runs; Ctrl-C stops every process the command started.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flanmoe import tracking
from pipelines import ui
from pipelines.experiment import EXPERIMENTS_DIR, experiment_ref
from pipelines.publish import ARTIFACT_KEY
from tests.test_flow import _prefect_record
from tests.test_pipeline import micro_workspace

pytestmark = pytest.mark.slow

TARGETS = ["pretrain@dense-1234"]
STAGES = ["prepare", "tokenize", "pretrain@dense-1234"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> list[tuple[int, str, int, int]]:
    """``(pid, state, ppid, pgid)`` of every process (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])))
    return out


def _children(pid: int) -> list[int]:
    return [p for p, _, ppid, _ in _processes() if ppid == pid]


def _alive_in_group(pgid: int) -> list[int]:
    return [p for p, state, _, group in _processes() if group == pgid and state != "Z"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python -m pipelines.ui` in a micro workspace, on free ports, with its own Prefect home."""
    base = tmp_path_factory.mktemp("ui")
    work, env = micro_workspace(base / "repo")
    prefect_port, mlflow_port = _free_port(), _free_port()
    env = {**env, "PREFECT_HOME": str(base / "prefect-home")}
    env.pop("MLFLOW_TRACKING_URI")  # make ui points the runs at its MLflow server
    log = open(base / "ui.out", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.ui", "--prefect-port", str(prefect_port),
         "--mlflow-port", str(mlflow_port), "--startup-timeout", "300"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 360
    while "UI ready" not in (base / "ui.out").read_text():
        assert proc.poll() is None, (base / "ui.out").read_text()[-3000:]
        assert time.monotonic() < deadline, (base / "ui.out").read_text()[-3000:]
        time.sleep(1)
    handle = {
        "work": work,
        "proc": proc,
        "out": base / "ui.out",
        "api": f"http://127.0.0.1:{prefect_port}/api",
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
        "groups": _children(proc.pid),  # start_new_session: each child leads its own group
    }
    yield handle
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    log.close()


@pytest.fixture
def prefect_api(served):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: served["api"]}):
        yield


def _wait_final(flow_run_ids, timeout=900):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in flow_run_ids]
            if all(r.state.is_final() for r in runs):
                return runs
            assert time.monotonic() < deadline, [r.state for r in runs]
            time.sleep(2)


def _task_runs(flow_run_id):
    return _prefect_record(flow_run_id)[1]


def _artifact(flow_run_id, key: str) -> str:
    (artifact,) = [a for a in _prefect_record(flow_run_id)[2] if a.key == key]
    return artifact.data


def _git_show(work: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=work, capture_output=True, text=True, check=True
    ).stdout


def test_ui_serves_the_deployment_with_the_form(served, prefect_api):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"flan-moe/{ui.DEPLOYMENT}")
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert deployment.enforce_parameter_schema
    form = deployment.parameter_openapi_schema["definitions"]["RunSettings"]["properties"]
    assert form["archs"]["anyOf"][0]["items"]["enum"][:2] == ["dense", "switch"]
    assert "UI ready" in served["out"].read_text()
    assert ui.healthy(served["mlflow"] + "/health") and ui.healthy(served["api"] + "/health")


def test_two_runs_triggered_at_once_are_queued_and_keep_their_own_results(served, prefect_api):
    from prefect.deployments import run_deployment

    work = served["work"]
    params_before = (work / "params.yaml").read_bytes()
    steps = {"run-a": 3, "run-b": 5}
    flow_runs = {
        name: run_deployment(
            f"flan-moe/{ui.DEPLOYMENT}",
            parameters={
                "settings": {"experiment_name": name, "pretrain_steps": n},
                "targets": TARGETS,
                "retry_delay_seconds": 1,
            },
            timeout=0,  # return at once, as the UI does: both are triggered before either starts
        )
        for name, n in steps.items()
    }
    final = dict(zip(flow_runs, _wait_final([r.id for r in flow_runs.values()]), strict=True))
    for name, run in final.items():
        assert run.state.is_completed(), (name, run.state, served["out"].read_text()[-4000:])
    # queued: one ran after the other
    first, second = sorted(final.values(), key=lambda r: r.start_time)
    assert second.start_time >= first.end_time

    # each is its own DVC experiment with its own params and results; the workspace is as it was
    assert (work / "params.yaml").read_bytes() == params_before
    assert (
        not (work / "dvc.lock").exists() and not (work / "models" / "pretrain" / "s1234" / "dense").exists()
    )
    for name, n in steps.items():
        ref = experiment_ref(work, name)
        assert ref, name
        assert yaml.safe_load(_git_show(work, ref, "params.yaml"))["pretrain"]["steps"] == n
        assert json.loads(_git_show(work, ref, "metrics/pretrain/s1234/dense.json"))["steps"] == n
        tasks = _task_runs(final[name].id)
        assert set(STAGES) <= set(tasks) and f"dvc exp save {name}" in tasks  # every stage a task run
        assert all(t.state.is_completed() for t in tasks.values())
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=work, capture_output=True, text=True
    )
    assert listed.returncode == 0 and all(name in listed.stdout for name in steps)
    assert not any((work / EXPERIMENTS_DIR).iterdir())  # the private copies are gone

    # the same experiment name again is refused before anything runs
    again = run_deployment(
        f"flan-moe/{ui.DEPLOYMENT}",
        parameters={"settings": {"experiment_name": "run-a", "pretrain_steps": 2}, "targets": TARGETS},
        timeout=0,
    )
    (again,) = _wait_final([again.id], timeout=300)
    assert again.state.is_failed() and "'run-a': a DVC experiment of that name exists" in again.state.message
    assert _task_runs(again.id) == {}

    # MLflow, through the server: a parent run per flow run, the stages as its children, tagged
    runs = tracking.search_runs("flan-moe", uri=served["mlflow"])
    for name, n in steps.items():
        (parent,) = [r for r in runs if r["run_name"] == name and r["tags"].get("pipeline") == "prefect flow"]
        assert parent["status"] == "FINISHED"
        assert parent["tags"]["prefect_flow_run_id"] == str(final[name].id)
        assert f"mlflow_run_id:{parent['run_id']}" in final[name].tags
        markdown = _artifact(final[name].id, ARTIFACT_KEY)  # links to the parent run's MLflow page
        assert f"<{served['mlflow']}/#/experiments/" in markdown and f"/runs/{parent['run_id']}>" in markdown
        children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parent["run_id"]]
        (pretrain,) = [r for r in children if r["tags"]["stage"] == "pretrain"]
        assert pretrain["tags"]["arch"] == "dense" and pretrain["tags"]["dvc_exp"] == name
        assert pretrain["params"]["pretrain.steps"] == str(n)


def test_bad_form_input_is_refused_before_any_run(served, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    work = served["work"]
    with get_client(sync_client=True) as client:
        before = len(client.read_flow_runs())
    # an unknown arch is not one of the form's choices: the server refuses the parameters
    with pytest.raises(Exception, match="nope"):
        run_deployment(f"flan-moe/{ui.DEPLOYMENT}", parameters={"settings": {"archs": ["nope"]}}, timeout=0)
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs()) == before  # no run was created

    # an expert-parallel degree that does not divide the experts: the flow stops before any stage
    run = run_deployment(
        f"flan-moe/{ui.DEPLOYMENT}",
        parameters={
            "settings": {"num_experts": 6, "nproc": 4, "expert_parallel": 4, "experiment_name": "bad"}
        },
        timeout=0,
    )
    (run,) = _wait_final([run.id], timeout=300)
    assert run.state.is_failed()
    assert "parallel.ep: 4 does not divide num_experts 6" in run.state.message
    assert _task_runs(run.id) == {}
    assert experiment_ref(work, "bad") is None
    runs = tracking.search_runs("flan-moe", uri=served["mlflow"])
    assert not [r for r in runs if r["run_name"] == "bad"]


def test_ctrl_c_stops_every_process(served):
    proc = served["proc"]
    groups = served["groups"]
    assert len(groups) == 3 and all(_alive_in_group(g) for g in groups)  # mlflow, prefect, deployment
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0
    assert "stopped." in served["out"].read_text()
    assert [g for g in groups if _alive_in_group(g)] == []
    for url in (served["api"] + "/health", served["mlflow"] + "/health"):
        assert not ui.healthy(url)


def test_ui_refuses_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.ui", "--prefect-port", str(port)],
            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
            env={**os.environ, "PREFECT_HOME": str(tmp_path)},
        )  # fmt: skip
    assert proc.returncode == 2 and f"port {port}" in proc.stderr and "--prefect-port" in proc.stderr
    assert not (tmp_path / "prefect.db").exists()
