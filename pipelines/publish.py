"""Publishing a run's outcome: the markdown summary (stages, states, links, scores) and the scores table
as Prefect artifacts, the study report (when the run reached the report stage) as a Prefect artifact and
MLflow artifacts of the parent run, MLflow tags and links, and a preset's report copied back into the
workspace. The score tables are ``flanmoe.report.scores``'."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flanmoe.atomic import copy_dir
from flanmoe.config import parse_params
from flanmoe.report.scores import score_records, scores_markdown
from pipelines.overrides import PARAMS_FILE
from pipelines.runner import FAILED, NOT_RUN, RAN, RESTORED, SKIPPED

ARTIFACT_KEY = "flan-moe-pipeline"
TABLE_KEY = "flan-moe-scores"
REPORT_KEY = "flan-moe-report"  # <report.dir>/report.md, when the run reached the report stage
DONE = (RAN, SKIPPED, RESTORED)  # a stage whose outputs are there


def evaluate_metrics(repo: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(model, data)`` of every readable ``metrics/evaluate/s<seed>/*.json``, named
    ``s<seed>/<model>``."""
    out = []
    root = Path(repo) / "metrics" / "evaluate"
    for f in sorted(root.glob("s*/*.json")):
        try:
            out.append((f"{f.parent.name}/{f.stem}", json.loads(f.read_text())))
        except (OSError, ValueError):
            continue
    return out


def state_counts(states: Mapping[str, str]) -> dict[str, int]:
    """How many stages ended in each state (states in the order ran, skipped, restored, failed, not
    run; those no stage ended in left out)."""
    counts = {s: sum(1 for v in states.values() if v == s) for s in (RAN, SKIPPED, RESTORED, FAILED, NOT_RUN)}
    return {s: n for s, n in counts.items() if n}


def summary_markdown(
    states: Mapping[str, str],
    title: str,
    links: Mapping[str, str],
    models: list[tuple[str, dict[str, Any]]],
) -> str:
    """The run's markdown artifact: ``links`` (name -> value; URLs as links, empty ones left out), the
    state counts, a table of the stages and their states, and the scores of ``models``."""
    lines = [f"# {title}", ""]
    lines += [f"- {k}: " + (f"<{v}>" if v.startswith("http") else f"`{v}`") for k, v in links.items() if v]
    lines += ["- states: " + ", ".join(f"{n} {s}" for s, n in state_counts(states).items()), ""]
    lines += ["| stage | state |", "|---|---|"] + [f"| {s} | {st} |" for s, st in states.items()]
    table = scores_markdown(models)
    if table:
        lines += ["", "## Evaluation (metrics/evaluate; score [95% CI], best-constant baseline)", "", table]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def mlflow_parent_run(name: str, experiment: str, tags: Mapping[str, str | None], logger) -> Iterator[Any]:
    """The flow's MLflow parent run ``name`` (a ``tracking.StageRun``), the flow run tagged
    ``mlflow_run_id:<id>``."""
    from flanmoe import tracking

    with tracking.start_run(name, experiment, tags=tags) as run:
        logger.info("MLflow parent run %s (%s) in experiment %r", name, run.run_id, experiment)
        tag_flow_run(f"mlflow_run_id:{run.run_id}", logger)
        yield run


def tag_flow_run(tag: str, logger) -> None:
    """Add ``tag`` to the current Prefect flow run (best effort)."""
    from prefect import runtime
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(runtime.flow_run.id)
            client.update_flow_run(flow_run.id, tags=[*flow_run.tags, tag])
    except Exception as e:  # noqa: BLE001 - a tag is not worth failing the pipeline
        logger.warning("could not tag the flow run with %s: %s", tag, e)


def mlflow_link(run_id: str, experiment: str) -> str:
    """The parent run's page in the MLflow UI when the store is a tracking server, else its id."""
    from flanmoe import tracking

    uri = tracking.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return run_id
    return f"{uri.rstrip('/')}/#/experiments/{tracking.ensure_experiment(experiment)}/runs/{run_id}"


def export_report(work: Path, root: Path, report_dir: str, logger=None) -> Path | None:
    """Copy an experiment's report folder (``report.dir``, e.g. docs/study) into the workspace, unless
    it is the workspace's own report stage output (its DVC out: left to `dvc exp apply`)."""
    own = (parse_params(yaml.safe_load((root / PARAMS_FILE).read_text()) or {}, PARAMS_FILE)).report.dir
    src, dest = work / report_dir, root / report_dir
    if report_dir == own or not (src / "report.md").is_file():
        return None
    copy_dir(src, dest)
    if logger is not None:
        logger.info("report of the experiment copied to %s", dest)
    return dest


def publish(
    run, states: Mapping[str, str], work: Path, report_dir: str, name: str, links: Mapping[str, str]
) -> None:
    """Publish run ``name`` (MLflow parent run ``run``, stages ran in ``work``): stage counts as tags
    ``stages.<state>``; the summary markdown artifact; the scores as a table artifact and an MLflow
    table; the report stage's ``<report_dir>/report.md`` as a markdown artifact and its folder as MLflow
    artifacts (when the stage is done)."""
    run.set_tags({f"stages.{s.replace(' ', '_')}": n for s, n in state_counts(states).items()})
    models = evaluate_metrics(work)  # read once: the table artifact and the markdown
    report_md = work / report_dir / "report.md"
    study = None
    if states.get("report") in DONE and report_md.is_file():
        study = report_md.read_text()
        run.log_artifacts(report_md.parent, "report")  # with its plots
    markdown = summary_markdown(states, f"flan-moe pipeline: {name}", links, models)
    create_markdown_artifact(markdown, key=ARTIFACT_KEY, description=f"stages of {name}")
    scores = score_records(models)
    if scores:
        create_table_artifact(
            scores, key=TABLE_KEY, description=f"{name}: scores (95% CI) of metrics/evaluate"
        )
        run.log_table(scores, "scores.json")
    if study:
        create_markdown_artifact(study, key=REPORT_KEY, description=f"{name}: the study report")
