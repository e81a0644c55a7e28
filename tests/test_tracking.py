"""flanmoe.tracking: a logged model whose upload fails only warns, and is left FAILED, not PENDING."""

from __future__ import annotations

import warnings

from flanmoe import tracking


def test_model_upload_failure_warns_and_marks_the_model_failed(tmp_path, monkeypatch):
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}\n")

    def gone(*args, **kwargs):
        raise ConnectionError("artifact store gone")

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", gone)
    with tracking.start_run("t", "exp", tags={"stage": "pretrain"}) as run:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert run.log_model(model_dir, "pretrain-switch") is None
            run.log_metrics({"final/val_loss": 1.0})  # logging is off for the rest of the run
    assert sum("MLflow logging failed" in str(w.message) for w in caught) == 1
    client = MlflowClient(tracking.tracking_uri())
    (model,) = client.search_logged_models([client.get_run(run.run_id).info.experiment_id])
    assert model.status == LoggedModelStatus.FAILED and model.tags["stage"] == "pretrain"
    assert (
        client.get_run(run.run_id).info.status == "FINISHED" and not client.get_run(run.run_id).data.metrics
    )


def test_hub_and_local_datasets_logged_by_reference(tmp_path, monkeypatch):
    import json

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    refs = [
        tracking.DatasetRef("cais/mmlu", hub="cais/mmlu", config="all", revision="c30699e", context="source"),
        tracking.DatasetRef("data/raw/x.jsonl", path="data/raw/x.jsonl", digest="0" * 32, context="source"),
    ]
    with tracking.start_run("t", "exp") as run:
        run.log_datasets(refs)
    assert not run.broken
    inputs = MlflowClient(tracking.tracking_uri()).get_run(run.run_id).inputs.dataset_inputs
    logged = {
        d.dataset.name: (d.dataset.source_type, json.loads(d.dataset.source), d.dataset.digest)
        for d in inputs
    }
    hub_type, hub_source, hub_digest = logged["cais/mmlu"]
    assert hub_type == "hugging_face" and hub_digest  # a digest derived from the reference
    assert (hub_source["path"], hub_source["config_name"], hub_source["revision"]) == (
        "cais/mmlu",
        "all",
        "c30699e",
    )
    assert logged["data/raw/x.jsonl"] == ("local", {"uri": "data/raw/x.jsonl"}, "0" * 32)
