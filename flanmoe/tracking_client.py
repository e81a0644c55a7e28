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

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

SERVE_ARGS = ("-m", "flanmoe.tracking", "--serve")
SOCKET_ENV = "FLANMOE_TRACKING_SOCKET"  # a pipeline's helper (``pipeline_helper``), if one runs
PARENT_ENV = "FLANMOE_PARENT_RUN_ID"  # the pipeline's MLflow run: every stage run is its child
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
        self._models = 0
        self.started = False
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._out = None  # the text stream the calls go to
        address = os.environ.get(SOCKET_ENV)
        if address:  # a pipeline's helper (make run): mlflow is imported once for every stage
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(address)
                self._out = self._sock.makefile("w", encoding="utf-8")
                self._send("env", _client_env())
            except OSError:
                self._sock, self._out = None, None
        if self._out is None:
            self._proc = subprocess.Popen(
                [sys.executable, *SERVE_ARGS], stdin=subprocess.PIPE, text=True, encoding="utf-8"
            )
            self._out = self._proc.stdin

    def _send(self, op: str, *args, **kwargs) -> None:
        if self._out is None:
            return
        try:
            self._out.write(json.dumps({"op": op, "args": args, "kwargs": kwargs}, default=str) + "\n")
            self._out.flush()
        except (BrokenPipeError, OSError, ValueError) as e:  # the helper died: warn once, go on
            warnings.warn(
                f"MLflow logging failed (the tracking helper is gone: {e}); the run goes on without tracking",
                RuntimeWarning,
                stacklevel=3,
            )
            self._out = None

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
        if self.started:
            self._send("end", status)
        out, self._out = self._out, None
        try:
            if out is not None:
                out.close()
            if self._sock is not None:  # the helper closes the connection once it has logged it all
                self._sock.shutdown(socket.SHUT_WR)
                while self._sock.recv(4096):
                    pass
        except OSError:
            pass
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


def _client_env() -> dict[str, str | None]:
    """What a pipeline's helper must log this stage's run with: its working directory (the default
    store and artifact folder are there), tracking URI and parent run."""
    return {
        "cwd": os.getcwd(),
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI"),
        PARENT_ENV: os.environ.get(PARENT_ENV),
    }


@contextlib.contextmanager
def pipeline_helper() -> Iterator[dict[str, str]]:
    """One helper for a whole pipeline run (``python -m flanmoe.tracking --serve-socket PATH``):
    yields the environment to give the stages (``FLANMOE_TRACKING_SOCKET``), also set in this
    process's ``os.environ`` while it runs; each stage's run then connects to it instead of starting a
    helper of its own. Stages must run one at a time (DVC runs them so). Stops it when the pipeline is
    done (after the stage it is logging, if any)."""
    folder = tempfile.mkdtemp(prefix="flanmoe-tracking-")
    address = os.path.join(folder, "helper.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flanmoe.tracking", "--serve-socket", address],
        stdin=subprocess.PIPE,
    )
    before = os.environ.get(SOCKET_ENV)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(address) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # it binds before importing mlflow: connections queue meanwhile
        env = {SOCKET_ENV: address} if os.path.exists(address) else {}
        os.environ.update(env)
        yield env
    finally:
        if before is None:
            os.environ.pop(SOCKET_ENV, None)
        else:
            os.environ[SOCKET_ENV] = before
        if proc.stdin is not None:
            proc.stdin.close()  # the helper's signal to stop
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def unreachable_server(uri: str | None = None, timeout: float = 2.0) -> str | None:
    """Why the MLflow tracking server of ``uri`` (default ``$MLFLOW_TRACKING_URI``) cannot be reached
    (one TCP connect, at most ``timeout`` seconds: not mlflow's retries), or None when it answers or
    ``uri`` is no http(s) server (a file or SQLite store needs none)."""
    from urllib.parse import urlsplit

    uri = os.environ.get("MLFLOW_TRACKING_URI") if uri is None else uri
    parts = urlsplit(uri or "")
    if parts.scheme not in ("http", "https"):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except (OSError, ValueError) as e:  # refused, timed out, unknown host, a bad port
        why = f"{type(e).__name__}: {e}"
    return (
        f"MLFLOW_TRACKING_URI: no MLflow tracking server answers at {uri} ({why}); start it, or run "
        "without it: unset MLFLOW_TRACKING_URI and the stage logs to the local store (mlruns.db in "
        "the working directory)"
    )


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
