"""MLflow, in one place: the only module of the project that imports ``mlflow``.

Default store: ``mlruns.db`` (SQLite) in the working directory plus ``mlartifacts/`` beside it;
``MLFLOW_TRACKING_URI`` points elsewhere (e.g. ``http://127.0.0.1:5000``). A pipeline run (``make run``,
a Prefect flow) opens a parent run and exports its id as ``FLANMOE_PARENT_RUN_ID``; every stage run is
then a child of it, tagged ``stage`` (and ``arch``, ``scenario``, ``task`` where they apply).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LoggedModelOutput
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from flanmoe.env import apply_offline_env
from flanmoe.tracking_client import PARENT_ENV, DatasetRef  # noqa: F401 (re-exported)

# A tracking server that is gone should cost a training run seconds, not MLflow's default ~4 minutes
# of retries per call (7 retries, backoff 2, 120 s timeout); a value the user set wins.
for _key, _value in {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}.items():
    os.environ.setdefault(_key, _value)
_MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
MODEL_TYPE = "flanmoe"  # logged models: the exported directory format of flanmoe.model.pretrained
_BAD_MODEL_NAME_CHARS = re.compile(r"[/:.%\"']")  # characters MLflow refuses in a logged model's name


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def _artifact_location() -> str | None:
    uri = tracking_uri()
    # a local store keeps artifacts beside it; a server decides for itself
    return (Path.cwd() / "mlartifacts").as_uri() if uri.startswith(("sqlite:", "file:", "/")) else None


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created if missing (with our local artifact folder)."""
    apply_offline_env()
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location())
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def _tolerant(method: Callable) -> Callable:
    """A logging call that never stops the run: the first failure (tracking server gone, database
    locked, ...) warns once and turns the rest of this run's logging off; the stage's own files still
    get every figure."""

    @functools.wraps(method)
    def wrapper(self: StageRun, *args, **kwargs):
        if self.broken:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any tracking failure must not kill training
            self.broken = True
            warnings.warn(
                f"MLflow logging failed ({type(e).__name__}: {e}); the run goes on without tracking",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    return wrapper


def _dataset_to_mlflow(ref: DatasetRef) -> MetaDataset:
    if ref.hub is not None:
        source = HuggingFaceDatasetSource(
            ref.hub, config_name=ref.config, split=ref.split, revision=ref.revision
        )
    else:  # the "local" source MLflow registers for file paths, without its guessing
        source = get_dataset_source_from_json(json.dumps({"uri": str(ref.path)}), "local")
    return MetaDataset(source, name=ref.name, digest=ref.digest)


class StageRun:
    """A live MLflow run: what a stage logs goes through here (failures warn, never raise).
    ``tags``: the tags it was opened with (a logged model of the run carries them too)."""

    def __init__(self, run_id: str, tags: Mapping[str, str] | None = None):
        self.run_id = run_id
        self.tags = dict(tags or {})
        self.broken = False

    @_tolerant
    def log_params(self, params: Mapping[str, object]) -> None:
        items = [(k, "None" if v is None else str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_CALL):
            mlflow.log_params(dict(items[i : i + _MAX_PARAMS_PER_CALL]))

    @_tolerant
    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None
    ) -> None:
        """Numeric ``metrics`` of the run (and of logged model ``model_id``, when given)."""
        clean = {
            k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if clean:
            mlflow.log_metrics(clean, step=step, model_id=model_id)

    @_tolerant
    def set_tags(self, tags: Mapping[str, object]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    @_tolerant
    def log_dict(self, obj: dict, artifact_file: str) -> None:
        mlflow.log_dict(obj, artifact_file)

    @_tolerant
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    @_tolerant
    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        """Rows of dicts as an MLflow table (shown in the UI's evaluation / artifact views)."""
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            data = {k: [_cell(r.get(k)) for r in rows] for k in keys}
            mlflow.log_table(data=data, artifact_file=artifact_file)

    @_tolerant
    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifacts(str(directory), artifact_path=artifact_path)

    @_tolerant
    def log_datasets(self, datasets: Iterable[DatasetRef]) -> None:
        """The datasets this run reads, as run inputs (``mlflow.log_inputs``)."""
        refs = list(datasets)
        if refs:
            mlflow.log_inputs(
                datasets=[_dataset_to_mlflow(r) for r in refs],
                contexts=[r.context for r in refs],
                tags_list=[None] * len(refs),
            )

    @_tolerant
    def log_model(
        self,
        directory: str | Path,
        name: str,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> str | None:
        """An exported model directory (config.json, model.safetensors, tokenizer.json) as an MLflow 3
        logged model: an output of this run, tagged like it plus ``tags``, with ``params`` (e.g. the
        model config). Its files are stored as they are (no flavor, nothing pickled) beside an
        ``MLmodel`` file naming the loader. Returns the model id (for ``log_metrics(model_id=)``).
        """
        client = MlflowClient()
        model = mlflow.initialize_logged_model(
            name=_BAD_MODEL_NAME_CHARS.sub("_", name),
            source_run_id=self.run_id,
            tags={k: str(v) for k, v in {**self.tags, **(tags or {})}.items() if v is not None},
            params={k: "None" if v is None else str(v)[:6000] for k, v in (params or {}).items()},
            model_type=MODEL_TYPE,
        )
        try:
            client.log_outputs(self.run_id, models=[LoggedModelOutput(model.model_id, step=0)])
            spec = Model(
                artifact_path=model.artifact_location,
                model_uuid=model.model_id,
                model_id=model.model_id,
                run_id=self.run_id,
            )
            spec.add_flavor(MODEL_TYPE, loader="flanmoe.model.load_pretrained")
            with tempfile.TemporaryDirectory() as tmp:
                spec.save(os.path.join(tmp, "MLmodel"))
                client.log_model_artifact(model.model_id, os.path.join(tmp, "MLmodel"))
            client.log_model_artifacts(model.model_id, str(directory))
        except Exception:
            with contextlib.suppress(Exception):  # the first error is the one to report
                client.finalize_logged_model(model.model_id, "FAILED")
            raise
        client.finalize_logged_model(model.model_id, "READY")
        return model.model_id


def _cell(value: object) -> object:
    """A table cell: lists and dicts as JSON text (a table column holds scalars)."""
    import json

    return json.dumps(value) if isinstance(value, list | dict) else value


def open_run(
    run_name: str, experiment: str, tags: Mapping[str, object] | None = None, parent_run_id: str | None = None
) -> StageRun:
    """Start a run (a child of ``parent_run_id`` or of ``$FLANMOE_PARENT_RUN_ID`` if set); end it with
    ``close_run``."""
    exp_id = ensure_experiment(experiment)
    parent = parent_run_id or os.environ.get(PARENT_ENV) or None
    run_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=run_tags, parent_run_id=parent)
    return StageRun(run.info.run_id, run_tags)


def close_run(run: StageRun, status: str) -> None:
    """End ``run`` with ``status``; a tracking store that is gone by now only warns."""
    try:
        mlflow.end_run(status)
    except Exception as e:  # noqa: BLE001 - the server may be gone by now; the outputs are written
        warnings.warn(f"MLflow: could not end run {run.run_id} ({e})", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def start_run(
    run_name: str, experiment: str, tags: Mapping[str, object] | None = None, parent_run_id: str | None = None
) -> Iterator[StageRun]:
    """Open a run (a child of ``parent_run_id`` or of ``$FLANMOE_PARENT_RUN_ID`` if set).

    The run ends FINISHED, or FAILED if the body raises.
    """
    stage_run = open_run(run_name, experiment, tags, parent_run_id)
    status = "FAILED"
    try:
        yield stage_run
        status = "FINISHED"
    finally:
        close_run(stage_run, status)


def serve(lines: Iterable[str]) -> None:
    """The helper of ``flanmoe.tracking_client.BackgroundRun``: one ``StageRun`` call per JSON line of
    ``lines`` (``start`` opens the run, ``end`` closes it); input that ends without ``end`` ends the
    run KILLED (the stage died: what it sent is logged)."""
    run: StageRun | None = None
    models: dict[str, str | None] = {}
    status = "KILLED"
    for line in lines:
        msg = json.loads(line)
        op, args, kwargs = msg["op"], msg["args"], msg["kwargs"]
        if op == "env":  # a pipeline's helper logs for stages of their own directory and environment
            os.chdir(args[0].pop("cwd"))
            for key, value in args[0].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            continue
        if op == "start":
            try:
                run = open_run(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - no tracking must not stop the stage
                warnings.warn(
                    f"MLflow logging failed (could not start run {args[0]!r}: {type(e).__name__}: {e}); "
                    "the run goes on without tracking",
                    RuntimeWarning,
                    stacklevel=1,
                )
                run = None
            continue
        if op == "end":
            status = args[0]
            break
        if run is None:
            continue
        if op == "log_model":
            ref = kwargs.pop("ref")
            models[ref] = run.log_model(*args, **kwargs)
        elif op == "log_metrics":
            model = kwargs.get("model_id")
            kwargs["model_id"] = models.get(model) if model in models else model
            run.log_metrics(*args, **kwargs)
        elif op == "log_datasets":
            run.log_datasets([DatasetRef(**d) for d in args[0]])
        else:
            getattr(run, op)(*args, **kwargs)
    if run is not None:
        close_run(run, status)


def search_runs(experiment: str, filter_string: str = "", uri: str | None = None) -> list[dict]:
    """Runs of ``experiment`` in the store ``uri`` (default ``tracking_uri()``) as plain dicts:
    ``run_id``, ``run_name``, ``status``, ``params``, ``metrics``, ``tags``."""
    client = MlflowClient(tracking_uri=uri or tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=filter_string)
    return [
        {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags),
        }
        for r in runs
    ]


def serve_socket(address: str) -> None:
    """A pipeline's helper (``flanmoe.tracking_client.pipeline_helper``): ``serve`` for each stage
    that connects to the Unix socket ``address``, one stage at a time, until its stdin closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(8)
    _warm_store()
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if listener in ready:
            conn, _ = listener.accept()
            with conn, conn.makefile("r", encoding="utf-8") as lines:
                try:
                    serve(lines)
                except Exception as e:  # noqa: BLE001 - one stage's bad message must not stop the others
                    warnings.warn(f"MLflow helper: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=1)
            continue
        if not sys.stdin.buffer.read1(1):  # the pipeline is done (its end of the pipe closed)
            return


def _warm_store() -> None:
    if tracking_uri().startswith("sqlite:"):  # the store's ~0.9 s import, while the stage starts up
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


if __name__ == "__main__" and sys.argv[1:2] in (["--serve"], ["--serve-socket"]):
    import signal

    # the stage's Ctrl-C or SIGTERM reaches its whole process group: drain what it sent, then end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.argv[1] == "--serve-socket":
        serve_socket(sys.argv[2])
    else:
        _warm_store()
        serve(sys.stdin)
