"""`make run`: the embedded default pipeline as one MLflow parent run around `dvc repro`.

Every stage DVC runs becomes a child run of it (through ``FLANMOE_PARENT_RUN_ID``), logged by one
MLflow helper process for the whole pipeline (``tracking_client.pipeline_helper``). When DVC says the
pipeline is up to date, nothing runs and no MLflow run is made. Extra arguments go to `dvc repro`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from flanmoe.config import load_params_or_exit


def _dvc(*args: str, env: dict | None = None) -> int:
    return subprocess.call([sys.executable, "-m", "dvc", *args], env=env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    params = load_params_or_exit()
    from flanmoe.tracking_client import unreachable_server

    problem = unreachable_server()  # the parent run and every stage log there: fail before any work
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from pipelines.graph import missing_params

    missing = missing_params()
    if missing:  # DVC would stop at the first such stage, after running the ones before it
        print(f"error: params.yaml: keys dvc.yaml names are missing: {'; '.join(missing)}", file=sys.stderr)
        return 2
    if not argv and _dvc("status", "--quiet") == 0:
        print("dvc: data and pipelines are up to date; nothing to run.")
        return 0
    from flanmoe import tracking, tracking_client
    from stages.common import git_commit

    name = time.strftime("repro-%Y%m%d-%H%M%S")
    with tracking.start_run(
        name, params.base.experiment, tags={"pipeline": "dvc repro", "git_commit": git_commit()}
    ) as run:
        with tracking_client.pipeline_helper():  # mlflow imported once, not per stage (sets its env)
            rc = _dvc("repro", *argv, env={**os.environ, tracking.PARENT_ENV: run.run_id})
        run.set_tags({"dvc.returncode": rc})
        if rc != 0:
            raise SystemExit(rc)  # the parent run ends FAILED
    print(f"MLflow: parent run {name} ({run.run_id}) in experiment '{params.base.experiment}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
