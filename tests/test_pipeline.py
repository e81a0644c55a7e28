"""The main job end to end on a copy of the repo: `python -m pipelines.repro` (what `make run` calls)
runs `dvc repro` under one MLflow parent run; a second call is a no-op; dvc push works."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flanmoe import tracking
from tests.stage_helpers import REPO, TINY_EMBEDDED, complete, shipped_params
from tests.test_evaluate_stage import MICRO_EVAL
from tests.test_finetune_stage import micro_finetune
from tests.test_instruct_stage import micro_instruct
from tests.test_pretrain_stage import MICRO_MODEL, MICRO_TOKENIZE, micro_pretrain

pytestmark = pytest.mark.slow


def _copy_repo(dest: Path) -> None:
    """The files a clean clone would have (tracked + not-ignored), committed in a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # start as a fresh clone of a repo that never ran would
    (dest / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(dest / "metrics", ignore_errors=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)


def micro_workspace(work: Path) -> tuple[Path, dict]:
    """A clean-clone copy of the repo in ``work`` with micro-size params (uncommitted, as a user's
    edits would be), and the environment that runs it with its own MLflow store."""
    work.mkdir(parents=True)
    _copy_repo(work)
    params = shipped_params()
    params["prepare"]["embedded"] = {**params["prepare"].get("embedded", {}), **TINY_EMBEDDED}
    params["tokenize"].update(MICRO_TOKENIZE)
    params["model"] = {**params["model"], **MICRO_MODEL}
    params["pretrain"] = micro_pretrain(steps=4)
    params["instruct"] = micro_instruct(steps=2)
    params["finetune"] = micro_finetune(steps=2)
    params["instruct"].update(val_examples=16, seed=None)  # the evaluate stages depend on both keys
    params["evaluate"] = {**params["evaluate"], **MICRO_EVAL}
    (work / "params.yaml").write_text(yaml.safe_dump(complete(params), sort_keys=False))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return work, env


@pytest.fixture
def workspace(tmp_path):
    return micro_workspace(tmp_path / "repo")


def _repro(work: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.repro"], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_make_run_path(workspace):
    work, env = workspace
    _repro(work, env)
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    finetune = {
        f"finetune@{a}-fact_verification-{s}-1234"
        for a in ("dense", "switch")
        for s in ("direct", "after_it")
    }
    evaluate = {f"evaluate@{a}-{m}-1234" for a in ("dense", "switch") for m in ("pretrain", "instruct")}
    evaluate |= {f"evaluate_{s}" for s in finetune}
    trained = {f"{s}@{a}-1234" for s in ("pretrain", "instruct") for a in ("dense", "switch")}
    assert set(lock["stages"]) == {"prepare", "tokenize", *trained, *finetune, *evaluate, "report"}
    assert (work / "data" / "tokenized" / "tokenizer.json").is_file()
    assert (work / "metrics" / "prepare.json").is_file() and (work / "metrics" / "tokenize.json").is_file()

    runs = tracking.search_runs("flan-moe", uri=env["MLFLOW_TRACKING_URI"])
    parents = [r for r in runs if r["tags"].get("pipeline") == "dvc repro"]
    assert len(parents) == 1 and parents[0]["status"] == "FINISHED"
    children = {
        r["tags"]["stage"]: r for r in runs if r["tags"].get("mlflow.parentRunId") == parents[0]["run_id"]
    }
    assert set(children) == {"prepare", "tokenize", "pretrain", "instruct", "finetune", "evaluate", "report"}
    assert (work / "docs" / "report" / "report.md").is_file() and (work / "metrics" / "report.json").is_file()
    # the paper's comparisons line up in MLflow: evaluate runs by arch and scenario, every score present
    scored = {
        (r["tags"]["arch"], r["tags"]["scenario"], r["tags"]["model_stage"]): r["metrics"]
        for r in runs
        if r["tags"].get("stage") == "evaluate"
    }
    assert set(scored) == {
        (a, "it_zero_few", m) for a in ("dense", "switch") for m in ("pretrain", "instruct")
    } | {(a, s, "finetune") for a in ("dense", "switch") for s in ("direct", "after_it")}
    for (_, scenario, _), logged in scored.items():
        keys = ("normalized_average/few_shot/score", "bbh/zero_shot/score", "mmlu/few_shot/score")
        assert all(
            k in logged for k in (keys if scenario == "it_zero_few" else ("finetune/zero_shot/score",))
        )
    tuned = {(r["tags"]["arch"], r["tags"]["scenario"]) for r in runs if r["tags"].get("stage") == "finetune"}
    assert tuned == {(a, s) for a in ("dense", "switch") for s in ("direct", "after_it")}
    for stage in ("pretrain", "instruct"):
        archs = {r["tags"].get("arch") for r in runs if r["tags"].get("stage") == stage}
        assert archs == {"dense", "switch"}
        for arch in ("dense", "switch"):
            assert (work / "models" / stage / "s1234" / arch / "model.safetensors").is_file()
    # the stage's input hash tag is the hash DVC recorded for that dependency
    dep = {d["path"]: d["md5"] for d in lock["stages"]["tokenize"]["deps"]}
    assert children["tokenize"]["tags"]["dvc.dep.data/prepared"] == dep["data/prepared"]
    tokenize_metrics = json.loads((work / "metrics" / "tokenize.json").read_text())["pretrain"]
    assert tokenize_metrics["packing"] == "document"  # the embedded default: one biography per chunk
    logged_efficiency = children["tokenize"]["metrics"]["pretrain.packing_efficiency"]
    assert (
        logged_efficiency == pytest.approx(tokenize_metrics["packing_efficiency"]) and logged_efficiency > 0.3
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True
    ).stdout.strip()
    assert children["prepare"]["tags"]["git_commit"].startswith(head)

    # second call: DVC has nothing to do, and no MLflow run is made
    proc = _repro(work, env)
    assert "up to date" in proc.stdout
    assert len(tracking.search_runs("flan-moe", uri=env["MLFLOW_TRACKING_URI"])) == len(runs)

    # DVC lists the pretrain figures and renders the loss curves (offline: a local HTML file)
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0 and "metrics/pretrain/s1234/switch.json" in shown.stdout, shown.stderr
    listed = json.loads(shown.stdout)
    files = next(iter(listed.values()))["data"]
    for a in ("dense", "switch"):
        assert (
            "score"
            in files[f"metrics/evaluate/s1234/{a}-instruct.json"]["data"]["normalized_average"]["few_shot"]
        )
        assert (
            "score"
            in files[f"metrics/evaluate/s1234/{a}-fact_verification-after_it.json"]["data"]["finetune"][
                "zero_shot"
            ]
        )
    plots = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert plots.returncode == 0, plots.stderr
    rendered = json.loads(plots.stdout)
    assert not rendered.get("errors"), rendered["errors"]  # DVC drops a plot whose rows differ in keys
    assert all(
        rendered["data"][f"plots/{s}/s1234/{a}.json"]
        for s in ("pretrain", "instruct")
        for a in ("dense", "switch")
    )
    # the MoE curves carry routing health; the report's figures are DVC plots (top level)
    assert {"router_entropy", "router_dropped_fraction"} <= set(
        json.loads((work / "plots" / "pretrain" / "s1234" / "switch.json").read_text())[0]
    )
    assert {"docs/report/figures/headline.png", "docs/report/figures/routing_health.png"} <= set(
        rendered["data"]
    )

    # the default remote works out of the box
    push = subprocess.run(
        [sys.executable, "-m", "dvc", "push", "-q"], cwd=work, env=env, capture_output=True, text=True
    )
    assert push.returncode == 0, push.stderr
    assert any((work / ".dvcstore").rglob("*"))
