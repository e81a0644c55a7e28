"""The pipeline as a Prefect 3 flow that runs every stage *through DVC*.

dvc.yaml stays the one DAG and DVC decides what is up to date: the flow reads the stage graph from DVC
(``pipelines.graph``) and runs each stage as its own Prefect task run (named after the stage, e.g.
``pretrain@switch-1234``) through ``dvc repro --single-item``, one at a time in dependency order; a stage
ends ``ran``, ``skipped``, ``restored`` (from DVC's run cache) or ``failed`` (``pipelines.runner``), the
stages downstream of a failure ``not run``, and the flow fails. Prefect caching is off.

With overrides (dotted params keys, or a preset: ``pipelines.overrides``), validated before anything
runs, the run is a DVC experiment: stage by stage in a private copy of the workspace, recorded with
`dvc exp save` (``pipelines.experiment``). The whole flow is one MLflow parent run (each stage's run a
child), tagged with the Prefect flow run id, and its outcome is published at the end: stages, states
and scores as Prefect artifacts (``pipelines.publish``).

    python -m pipelines.flow                                   # the workspace, `dvc repro` semantics
    python -m pipelines.flow --set pretrain.steps=50 --set 'archs.run=[dense,switch]' --name steps50
    python -m pipelines.flow --target tokenize --target pretrain@dense-1234
"""

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger

from flanmoe.config import Params, ParamsError
from pipelines.experiment import check_experiment_name, private_workspace, save_experiment
from pipelines.graph import cwd, select_stages, stage_graph
from pipelines.overrides import (
    PARAMS_FILE,
    hydra_overrides,
    load_preset,
    requested,
    validate_overrides,
)
from pipelines.publish import DONE, export_report, mlflow_link, mlflow_parent_run, publish
from pipelines.runner import FAILED, NOT_RUN, run_stage
from pipelines.settings import RunSettings
from stages.common import git_commit


class PipelineFailed(RuntimeError):
    """Stages failed (``errors``: stage -> its exception); ``states`` holds every stage's state."""

    def __init__(self, states: Mapping[str, str], errors: Mapping[str, BaseException]):
        not_run = ", ".join(s for s, st in states.items() if st == NOT_RUN) or "none"
        super().__init__(f"failed: {', '.join(errors)}; not run: {not_run}\n{next(iter(errors.values()))}")
        self.states = dict(states)


@dataclass(frozen=True)
class Plan:
    """A run, checked before anything runs: its name (the DVC experiment's and the MLflow parent run's),
    whether it is a DVC experiment, its overrides (as ``-S`` arguments), stages, params and tags."""

    root: Path
    name: str
    experiment: bool
    set_params: list[str]
    targets: list[str]
    graph: dict[str, list[str]]
    params: Params
    preset: str | None
    flow_run_id: str | None
    tags: dict[str, str | None]  # the MLflow parent run's


def plan_run(settings, overrides, name, preset, targets, repo: str) -> Plan:
    """The run ``pipeline`` was asked for; raises ``ParamsError`` or ``ValueError`` on bad input."""
    from prefect import runtime

    root, targets = Path(repo).resolve(), list(targets or [])
    overrides, name = requested(root, settings, overrides, name, preset)
    experiment = bool(overrides) or name is not None
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    name = name or time.strftime("flow-%Y%m%d-%H%M%S") + (f"-{flow_run_id[:4]}" if flow_run_id else "")
    data = yaml.safe_load((root / PARAMS_FILE).read_text()) or {}
    params = validate_overrides(data, overrides, str(root / PARAMS_FILE))
    set_params = hydra_overrides(data, overrides)
    graph = select_stages(stage_graph(root), targets)
    if experiment:
        check_experiment_name(root, name)
    from flanmoe.tracking_client import unreachable_server

    problem = unreachable_server()  # the parent run and every stage log there: fail before any work
    if problem is not None:
        raise ValueError(problem)
    with cwd(root):  # the workspace's commit, as every stage tags its run
        tags = {"pipeline": "prefect flow", "prefect_flow_run_id": flow_run_id, "git_commit": git_commit()}
    tags |= {"dvc_exp": name if experiment else None, "targets": " ".join(targets) or None,
             "overrides": json.dumps(overrides) if overrides else None}  # fmt: skip
    return Plan(root, name, experiment, set_params, targets, graph, params, preset, flow_run_id, tags)


def run_graph(
    graph: Mapping[str, list[str]], work: Path, run_id: str, exp: str | None, options, keep_going, logger
) -> tuple[dict[str, str], dict[str, BaseException]]:
    """One task run per stage, in ``graph``'s order, each waiting for its upstream stages; a stage
    downstream of a failure (or any stage after one, unless ``keep_going``) is ``not run``."""
    states: dict[str, str] = {}
    errors: dict[str, BaseException] = {}
    done = {}
    for stage, upstream in graph.items():
        blocked = [u for u in upstream if states.get(u) in (FAILED, NOT_RUN)]
        if blocked or (errors and not keep_going):
            states[stage] = NOT_RUN
            logger.warning("stage %s: not run (upstream %s)", stage, ", ".join(blocked) or "failed")
            continue
        task = run_stage.with_options(**options)
        done[stage] = state = task(
            stage, str(work), run_id, exp, return_state=True, wait_for=[done[u] for u in upstream]
        )
        if state.is_failed():
            states[stage] = FAILED
            errors[stage] = state.result(raise_on_failure=False)
        else:
            states[stage] = state.result()
    return states, errors


def record(plan: Plan, graph, work: Path, states: Mapping[str, str], ok: bool, run, logger) -> str:
    """An experiment that ran ``ok`` saved as a DVC experiment (returns its ref, else ''), and a
    preset's report copied into the workspace."""
    exp_ref = ""
    if plan.experiment and ok:
        exp_ref = save_experiment(plan.name, list(graph) if plan.targets else [], str(work), str(plan.root))
        run.set_tags({"dvc_exp_ref": exp_ref})
    if plan.experiment and plan.preset and states.get("report") in DONE:
        export_report(work, plan.root, plan.params.report.dir, logger)
    return exp_ref


def links(plan: Plan, run_id: str, exp_ref: str) -> dict[str, str]:
    """What the summary artifact links to ('' for what this run lacks)."""
    exp = (f"{plan.name} ({exp_ref})" if exp_ref else plan.name) if plan.experiment else ""
    return {
        "DVC experiment": exp,
        "overrides": " ".join(plan.set_params),
        "MLflow parent run": mlflow_link(run_id, plan.params.base.experiment),
        "Prefect flow run": plan.flow_run_id or "",
    }


@flow(name="flan-moe")
def pipeline(
    settings: RunSettings = RunSettings(),  # noqa: B008 - every field empty; never mutated
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    preset: str | None = None,
    targets: list[str] | None = None,
    retries: int = 1,
    retry_delay_seconds: float = 10.0,
    keep_going: bool = False,
    repo: str = ".",
) -> dict[str, str]:
    """Run dvc.yaml's stages through DVC; returns ``{stage: state}``.

    settings: the UI form (``pipelines.settings.RunSettings``); its filled fields become overrides.

    overrides: dotted params keys -> values (e.g. ``{"pretrain.steps": 50}``). None: run the workspace
      stage by stage (`dvc repro`). Given (or with ``name``): a DVC experiment, validated before
      anything runs, run stage by stage in a private copy of the workspace (the workspace is left as it
      is) and recorded with `dvc exp save` (see ``dvc exp show``).
    name: the DVC experiment's name (default ``flow-<time>``, ``<preset>-<time>``); also the MLflow
      parent run's name.
    preset: a named set of overrides, ``presets/<name>.yaml`` (``study``, ``gpu``; ``default`` is
      params.yaml as it is), under ``settings`` and ``overrides``. A preset's report folder
      (``report.dir``, e.g. docs/study) is copied back into the workspace when the run ends.
    targets: stage names (or foreach/matrix names such as ``pretrain``) to run with their upstream
      stages; None: all.
    retries, retry_delay_seconds: retries of a failed stage (a params error, exit status 2, never).
    keep_going: after a failure, still run the stages that do not depend on it (like `repro -k`).
    repo: the DVC workspace.
    """
    from flanmoe import tracking_client

    logger = get_run_logger()
    plan = plan_run(settings, overrides, name, preset, targets, repo)  # every check, before anything runs
    targets = plan.targets
    options = {"retries": retries, "retry_delay_seconds": retry_delay_seconds}
    exp = plan.name if plan.experiment else None
    # in the workspace: MLflow's default store is ./mlruns.db, the one the stages use
    with cwd(plan.root), mlflow_parent_run(plan.name, plan.params.base.experiment, plan.tags, logger) as run:
        with contextlib.ExitStack() as stack:
            stack.enter_context(tracking_client.pipeline_helper())  # one MLflow helper for all stages
            work, graph = plan.root, plan.graph
            if plan.experiment:  # in a private copy of the workspace
                work, graph = stack.enter_context(
                    private_workspace(plan.root, plan.name, plan.set_params, targets, logger)
                )
            states, errors = run_graph(graph, work, run.run_id, exp, options, keep_going, logger)
            exp_ref = record(plan, graph, work, states, not errors, run, logger)
            publish(run, states, work, plan.params.report.dir, plan.name, links(plan, run.run_id, exp_ref))
        if errors:
            first = next(iter(errors.values()))
            raise PipelineFailed(states, errors) from first
    return states


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.flow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override (value in YAML: 50, [dense,switch], null); runs a DVC experiment")  # fmt: skip
    ap.add_argument("--name", help="DVC experiment (and MLflow run) name; runs a DVC experiment")
    ap.add_argument("--preset", help="presets/<name>.yaml overrides (study, gpu; --set on top); runs a DVC experiment")  # fmt: skip
    ap.add_argument("--target", dest="targets", action="append", default=[], help="stage to run (with upstream)")  # fmt: skip
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args(argv)
    overrides = _parse_set(args.overrides)
    if args.preset:
        try:
            load_preset(".", args.preset)  # an unknown or malformed preset: bad input, before anything runs
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        states = pipeline(overrides=overrides or None, name=args.name, preset=args.preset,
                          targets=args.targets or None, retries=args.retries, keep_going=args.keep_going)  # fmt: skip
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (PipelineFailed, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    width = max((len(s) for s in states), default=0)
    for stage, state in states.items():
        print(f"{stage:<{width}}  {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
