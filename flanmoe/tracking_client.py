"""A stage's MLflow run kept in a helper process, so that MLflow costs the stage no wall time.

Importing mlflow and opening its store takes ~1.5 s of a 2-core machine, about as long as the rest of
a short stage's start-up. ``BackgroundRun`` starts ``python -m flanmoe.tracking --serve`` (the one
module that imports mlflow) as early as the stage's params are valid; the helper imports mlflow on the
other core while the stage imports torch and loads its data. Every logging call is one JSON line on
the helper's stdin, sent without waiting; the helper makes the same ``StageRun`` calls, in order, as
soon as they arrive. ``finish`` waits for the helper, so when the stage exits everything is logged.

A stage that dies loses nothing it had sent: the helper ignores SIGINT / SIGTERM and drains its
input to the end, then ends the run KILLED. A helper that cannot log (tracking server gone, database
locked) warns once on the stage's stderr, as ``StageRun`` does, and the stage goes on.

This module does not import mlflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

SERVE_ARGS = ("-m", "flanmoe.tracking", "--serve")
MODEL_REF = "@model:"  # log_model's return value: a reference the helper resolves to the model id


@dataclass(frozen=True)
class DatasetRef:
    """A dataset a run reads, logged by reference (nothing is loaded into memory).

    ``path``: a local file or directory (``name`` and ``source`` are the path; ``digest`` its DVC
    md5), or ``hub``: a Hugging Face dataset id (``config``, ``split``, ``revision`` as
    ``datasets.load_dataset`` takes them; without a digest MLflow derives one from the reference).
    ``context``: what the run does with it (``training``, ``evaluation``, ``source``).
    """

    name: str
    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    digest: str | None = None
    context: str | None = None


class BackgroundRun:
    """An MLflow run logged by a helper process; the methods of ``flanmoe.tracking.StageRun``.

    Make it early (``BackgroundRun()`` starts the helper), ``start`` it when the run's name and tags
    are known, log, then ``finish``. Without ``start``, ``finish`` (or the stage's exit) stops the
    helper and nothing is written.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, *SERVE_ARGS], stdin=subprocess.PIPE, text=True, encoding="utf-8"
        )
        self._models = 0
        self.started = False

    def _send(self, op: str, *args, **kwargs) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(json.dumps({"op": op, "args": args, "kwargs": kwargs}, default=str) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:  # the helper died: warn once, go on
            warnings.warn(
                f"MLflow logging failed (the tracking helper is gone: {e}); the run goes on without tracking",
                RuntimeWarning,
                stacklevel=3,
            )
            self._proc = None

    def start(
        self,
        run_name: str,
        experiment: str,
        tags: dict[str, object] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        """Open the run (a child of ``parent_run_id`` or ``$FLANMOE_PARENT_RUN_ID``)."""
        tags = {k: v for k, v in (tags or {}).items() if v is not None}
        self._send("start", run_name, experiment, tags, parent_run_id)
        self.started = True

    def log_params(self, params: dict[str, object]) -> None:
        self._send("log_params", {k: "None" if v is None else str(v) for k, v in params.items()})

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None
    ) -> None:
        clean = {
            k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if clean:
            self._send("log_metrics", clean, step=step, model_id=model_id)

    def set_tags(self, tags: dict[str, object]) -> None:
        self._send("set_tags", tags)

    def log_dict(self, obj: dict, artifact_file: str) -> None:
        self._send("log_dict", obj, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send("log_artifact", str(Path(path).resolve()), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self._send("log_artifacts", str(Path(directory).resolve()), artifact_path)

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        self._send("log_table", rows, artifact_file)

    def log_datasets(self, datasets: list[DatasetRef]) -> None:
        refs = [asdict(r) for r in datasets]
        if refs:
            self._send("log_datasets", refs)

    def log_model(
        self,
        directory: str | Path,
        name: str,
        params: dict[str, object] | None = None,
        tags: dict[str, object] | None = None,
    ) -> str:
        """Log an exported model directory; returns a reference to pass as ``log_metrics(model_id=)``.

        The helper copies the files when it gets to this call: the directory must stay as it is until
        ``finish``."""
        self._models += 1
        ref = f"{MODEL_REF}{self._models}"
        params = {k: "None" if v is None else str(v) for k, v in (params or {}).items()}
        self._send("log_model", str(Path(directory).resolve()), name, params=params, tags=tags, ref=ref)
        return ref

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED or FAILED) and wait until everything is logged."""
        if self._proc is None:
            return
        if self.started:
            self._send("end", status)
        proc, self._proc = self._proc, None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        proc.wait()


_PRESTARTED: BackgroundRun | None = None


def prestart() -> None:
    """Start the helper now (once per process, on the main rank only), for ``take`` to hand out later:
    its mlflow import then overlaps the stage's own start-up."""
    global _PRESTARTED
    if _PRESTARTED is None and os.environ.get("RANK", "0") == "0":
        _PRESTARTED = BackgroundRun()


def take() -> BackgroundRun:
    """The prestarted helper, or a new one."""
    global _PRESTARTED
    run, _PRESTARTED = _PRESTARTED, None
    return run if run is not None else BackgroundRun()
