"""Run a stage as DVC would (``python -m stages.<name>`` in a workspace) with params for tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

# the embedded suite at a size that builds in a second or two
TINY_EMBEDDED = {
    "pretrain_mb": 0.05,
    "it_people": 4,
    "heldout_people": 4,
    "bio_exposures": [1, 2],
    "flan_per_family": 4,
    "fewshot_k": 1,
    "mmlu_per_subject": 4,
    "bbh_per_task": 4,
    "finetune_train": 8,
    "finetune_eval": 4,
}
BBH_TASKS = ["boolean_expressions", "word_sorting"]
FT_TASKS = ["sentiment", "copy"]


def local_sources() -> dict:
    """A `prepare` section reading every source from the fixture files."""
    f = FIXTURES
    return {
        "pretrain": {"kind": "local", "path": str(f / "c4_hub"), "name": "en"},
        "flan": {"kind": "local", "path": str(f / "flan" / "flan-sample.jsonl")},
        "mmlu": {"kind": "local", "path": str(f / "mmlu_hub"), "name": "all"},
        "bbh": {
            "kind": "local",
            "path": str(f / "bbh") + "/{config}.json",
            "field": "examples",
            "configs": BBH_TASKS,
        },
        "finetune": {"kind": "local", "path": str(f / "finetune_hub"), "configs": FT_TASKS},
    }


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _under(defaults: dict, given: dict) -> dict:
    """``given`` with every key of ``defaults`` it lacks (nested dicts merged key by key)."""
    out = dict(given)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _under(value, out[key])
    return out


def complete(params: dict) -> dict:
    """``params`` with every field of the training, tokenize and evaluate sections spelled out, at the
    value the params models give a missing one: dvc.yaml names those keys one by one, and DVC refuses
    a stage whose params.yaml lacks one. What the stages compute is unchanged."""
    from flanmoe.data.config import TokenizeConfig
    from flanmoe.eval.config import EvaluateConfig
    from flanmoe.train.config import FinetuneConfig, InstructConfig, TrainConfig

    models = {"tokenize": TokenizeConfig, "pretrain": TrainConfig, "instruct": InstructConfig}
    models |= {"finetune": FinetuneConfig, "evaluate": EvaluateConfig}
    for section, model in models.items():  # the models' defaults: params that a test makes bad stay bad
        params[section] = _under(model().model_dump(mode="json"), params.get(section) or {})
    return params


def write_params(workdir: Path, **sections) -> dict:
    """The shipped params.yaml with ``sections`` merged in (one level deep), written to ``workdir``."""
    params = shipped_params()
    for name, value in sections.items():
        params[name] = {**params.get(name, {}), **value}
    if params["prepare"].get("pretrain", {}).get("kind", "embedded") != "embedded":
        # what a real corpus needs (presets/gpu.yaml): no salient spans to mask, no knowledge probe
        if "salient_fraction" not in sections.get("tokenize", {}):
            params["tokenize"]["salient_fraction"] = 0.0
        if "packing" not in sections.get("tokenize", {}):
            params["tokenize"]["packing"] = "stream"
        if "suites" not in sections.get("evaluate", {}):
            params["evaluate"]["suites"] = [s for s in params["evaluate"]["suites"] if s != "probe"]
    complete(params)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run_stage(
    stage: str, workdir: Path, check: bool = True, args: tuple[str, ...] = (), **env
) -> subprocess.CompletedProcess:
    """``python -m stages.<stage> *args`` in ``workdir``, MLflow logging to a store inside it."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlruns.db'}", **env}
    proc = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *args],
        cwd=workdir,
        env=full_env,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"stage {stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def mlflow_client(workdir: Path):
    """A client of the MLflow store ``run_stage`` logs to in ``workdir``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")


def logged_datasets(workdir: Path, run_id: str) -> dict[str, dict]:
    """The dataset inputs of run ``run_id``: name -> digest, source (parsed JSON), source type, context."""
    import json

    run = mlflow_client(workdir).get_run(run_id)
    return {
        d.dataset.name: {
            "digest": d.dataset.digest,
            "source": json.loads(d.dataset.source),
            "source_type": d.dataset.source_type,
            "context": {t.key: t.value for t in d.tags}.get("mlflow.data.context"),
        }
        for d in run.inputs.dataset_inputs
    }


def artifact_paths(workdir: Path, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of run ``run_id`` (under ``path``), recursively."""
    client = mlflow_client(workdir)
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(workdir, run_id, f.path) if f.is_dir else {f.path}
    return out


# The report header's machine sentence (stages/report.py): the one part of a report that is not golden.
REPORT_HOST = re.compile(r" Run on (.+?), \d+ CPUs, torch [^,]+, .*? on the same CPU model only\.")
