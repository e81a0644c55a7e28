"""Running one stage through DVC, and its outcome from DVC's machine-readable state.

A stage runs as ``dvc repro --single-item STAGE`` (its output streamed line by line to the Prefect log).
What happened is decided without reading that output, which a DVC release can reword:

- before the run, DVC's Python API gives the stage's status (``dvc status STAGE``: changed or up to
  date) and the params keys it depends on that its params file lacks (then it does not run);
- during the run, DVC runs the stage's command through ``stage_shell.sh``, which records the command's
  exit status;
- after it, DVC's own exit status.

A stage ends ``ran`` (its command ran), ``restored`` (it had changed, and DVC checked its outputs out of
the run cache without running it), ``skipped`` (up to date) or ``failed`` (``StageFailed``;
``StageParamsError``, never retried, for params missing or a command that exited 2, the stages' status
for bad params).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipelines.graph import cwd

RAN, SKIPPED, RESTORED, FAILED, NOT_RUN = "ran", "skipped", "restored", "failed", "not run"
PARAMS_ERROR_STATUS = 2  # a stage's exit status for bad params or input (stages.common.fail)
STDERR_TAIL = 20  # lines of a failed stage's stderr in the log and the exception
STAGE_SHELL = Path(__file__).with_name("stage_shell.sh")
STATUS_ENV = "FLANMOE_STAGE_STATUS"  # where stage_shell.sh appends each command's exit status


class StageFailed(RuntimeError):
    """A stage (or another DVC command) failed: ``returncode`` is DVC's exit status (None when DVC did
    not run), ``stage_returncode`` the stage command's (None when it did not run)."""

    def __init__(
        self,
        stage: str,
        returncode: int | None,
        stage_returncode: int | None,
        tail: list[str],
        reason: str | None = None,
    ):
        self.stage = stage
        self.returncode = returncode
        self.stage_returncode = stage_returncode
        self.tail = tail
        if reason is None:
            reason = f"dvc exit status {returncode}"
            if stage_returncode is not None:
                reason += f", stage command exit status {stage_returncode}"
        message = f"{stage} failed ({reason})"
        if tail:
            message += "; last lines of stderr:\n" + "\n".join(tail)
        super().__init__(message)


class StageParamsError(StageFailed):
    """A stage's params keys are missing from its params file, or its command stopped on invalid params
    (exit status 2): retrying cannot help."""


def dvc_command(*args: str) -> list[str]:
    """``dvc ARGS...`` run by this interpreter (the DVC of its environment)."""
    return [sys.executable, "-m", "dvc", *args]


def stage_env(parent_run_id: str | None = None, experiment: str | None = None) -> dict[str, str]:
    """The environment of DVC and its stages: `python` is this interpreter's, output unbuffered (lines
    reach the log as they are printed), MLflow runs children of the flow's parent run in the store the
    flow uses (an absolute URI: experiments run in another directory), ``DVC_EXP_NAME`` the experiment's
    name (as `dvc exp run` sets it)."""
    from flanmoe import tracking

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
    }
    if parent_run_id:
        env[tracking.PARENT_ENV] = parent_run_id
    if experiment:
        env["DVC_EXP_NAME"] = experiment
    return env


def stream(cmd: list[str], cwd: str | Path, env: Mapping[str, str], logger) -> tuple[int, list[str]]:
    """Run ``cmd``, logging each output line as it comes; returns (exit status, stderr's last lines)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(pipe, name: str) -> None:
        for line in pipe:
            lines.put((name, line.rstrip("\r\n")))
        lines.put((name, None))

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True),
    ]
    for t in threads:
        t.start()
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    open_pipes = 2
    try:
        while open_pipes:
            name, line = lines.get()
            if line is None:
                open_pipes -= 1
                continue
            if name == "stderr":
                tail.append(line)
            if line.strip():
                logger.info(line)
    except BaseException:  # interrupted, cancelled: DVC must not run on unseen
        proc.terminate()
        proc.wait()
        raise
    for t in threads:
        t.join()
    return proc.wait(), list(tail)


@dataclass(frozen=True)
class StageStatus:
    """What DVC says of a stage before it runs: ``changed`` (``dvc status STAGE`` lists it: deps,
    outs or command changed, or it never ran) and ``missing_params`` (``<params file>: <key>`` for each
    params key of its dvc.yaml entry that the file lacks)."""

    changed: bool
    missing_params: list[str] = field(default_factory=list)


def stage_status(repo: str | Path, stage: str) -> StageStatus:
    """``stage``'s status in ``repo``, from DVC's Python API (what ``dvc status --json STAGE`` prints)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with cwd(Path(repo).resolve()), Repo(".") as dvc_repo:  # stage names are relative to the repo root
        missing = []
        for found in dvc_repo.stage.collect(stage):
            for dep in found.deps:
                if isinstance(dep, ParamsDependency):
                    values = dep.read_params()  # the keys found ({} when the file is missing)
                    missing += [f"{dep.def_path}: {key}" for key in dep.params if key not in values]
        if missing:
            return StageStatus(changed=True, missing_params=missing)
        return StageStatus(changed=bool(dvc_repo.status(targets=[stage])))


def outcome(changed: bool, dvc_returncode: int, command_returncode: int | None) -> str:
    """The stage's state from ``changed`` (before), DVC's exit status and its command's (None: DVC did
    not run the command)."""
    if dvc_returncode != 0:
        return FAILED
    if command_returncode is not None:
        return RAN
    return RESTORED if changed else SKIPPED  # a changed stage DVC did not run: from the run cache


def run_dvc_stage(stage: str, repo: str | Path, env: Mapping[str, str], logger) -> str:
    """``dvc repro --single-item STAGE`` in ``repo``: returns ``ran``, ``restored`` or ``skipped``;
    raises ``StageFailed`` (``StageParamsError`` for params missing, before DVC runs, or a command
    that exited 2)."""
    before = stage_status(repo, stage)
    if before.missing_params:
        raise StageParamsError(
            stage, None, None, [], reason="params missing, dvc.yaml lists " + ", ".join(before.missing_params)
        )
    with tempfile.TemporaryDirectory(prefix="flanmoe-stage-") as tmp:
        status_file = Path(tmp) / "status"
        run_env = {**env, "SHELL": str(STAGE_SHELL), STATUS_ENV: str(status_file)}
        rc, tail = stream(dvc_command("repro", "--single-item", stage), repo, run_env, logger)
        statuses = status_file.read_text().split() if status_file.is_file() else []
    command_rc = int(statuses[-1]) if statuses else None  # the last command DVC ran (it stops at a failure)
    state = outcome(before.changed, rc, command_rc)
    if state == FAILED:
        cls = StageParamsError if command_rc == PARAMS_ERROR_STATUS else StageFailed
        raise cls(stage, rc, command_rc, tail)
    return state


def _retry_unless_params_error(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        with contextlib.suppress(Exception):
            exc = state.result(raise_on_failure=False)
    return not isinstance(exc, StageParamsError)


@task(
    task_run_name="{stage}",
    cache_policy=NO_CACHE,  # DVC decides what is up to date
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_params_error,
)
def run_stage(stage: str, repo: str, parent_run_id: str | None = None, experiment: str | None = None) -> str:
    """One stage as a Prefect task run (``run_dvc_stage``); a ``StageParamsError`` is never retried."""
    logger = get_run_logger()
    try:
        state = run_dvc_stage(stage, repo, stage_env(parent_run_id, experiment), logger)
    except StageFailed as exc:
        logger.error("%s", exc)
        raise
    logger.info("stage %s: %s", stage, state)
    return state
