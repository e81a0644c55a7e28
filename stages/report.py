"""Stage `report`: the evaluation metrics of every arch -> the paper-style table and its findings.

    python -m stages.report

Reads, for every arch of ``archs.run``: metrics/pretrain/<arch>.json (params, active params,
FLOPs/token), metrics/evaluate/<arch>-<pretrain|instruct>.json (held-out suites, scenario 2) and, for
every task of ``finetune.tasks`` and scenario of ``finetune.scenarios``,
metrics/evaluate/<arch>-<task>-<scenario>.json (scenarios 1 and 3); for the figures, the training
curves plots/pretrain/<arch>.json, plots/instruct/<arch>.json, plots/finetune/<arch>-<task>-<scenario>.json
and, for every MoE arch, evals/<arch>-instruct/routing.json (expert load per layer per task). Writes
docs/report/report.md and docs/report/report.html with the PNG figures beside them (git-tracked, so
the report is read where the code is; the HTML links the PNGs by file name) and metrics/report.json
(the IT gains, fine-tuning gains and every finding's verdict: DVC metrics), and logs them to MLflow
(run ``report``). A missing or unreadable input file stops it with exit status 2 and nothing written.
The table and the findings come from ``flanmoe.report``, the figures from ``flanmoe.report.plots``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flanmoe.config import flatten
from flanmoe.report.render import SCENARIO_LABEL
from stages.common import METRICS, atomic_dir, fail, load_params, tracked_run, write_json

REPORT_DIR = Path("docs") / "report"
REPORT_JSON = METRICS / "report.json"
EVALS = Path("evals")
PLOTS = Path("plots")


def needed_files(params) -> dict[str, Path]:
    """Every metrics file the report reads, keyed ``pretrain/<arch>``, ``<arch>-<model>``,
    ``<arch>-<task>-<scenario>``."""
    files: dict[str, Path] = {}
    for arch in params.archs.run:
        files[f"pretrain/{arch}"] = METRICS / "pretrain" / f"{arch}.json"
        for model in ("pretrain", "instruct"):
            files[f"{arch}-{model}"] = METRICS / "evaluate" / f"{arch}-{model}.json"
        for task in params.finetune.tasks:
            for scenario in params.finetune.scenarios:
                name = f"{arch}-{task}-{scenario}"
                files[name] = METRICS / "evaluate" / f"{name}.json"
    return files


def figure_files(params) -> dict[str, Path]:
    """Every file the figures read, keyed ``routing/<arch>`` (MoE archs: the instruction-tuned model's
    expert load) and ``curves/<stage>/<name>`` (training curves)."""
    files: dict[str, Path] = {}
    for arch in params.archs.run:
        if params.arch_config(arch).moe is not None:
            files[f"routing/{arch}"] = EVALS / f"{arch}-instruct" / "routing.json"
        for stage in ("pretrain", "instruct"):
            files[f"curves/{stage}/{arch}"] = PLOTS / stage / f"{arch}.json"
        for task in params.finetune.tasks:
            for scenario in params.finetune.scenarios:
                name = f"{arch}-{task}-{scenario}"
                files[f"curves/finetune/{name}"] = PLOTS / "finetune" / f"{name}.json"
    return files


def load_metrics(files: dict[str, Path]) -> dict[str, dict | list]:
    """The files as JSON (``curves/...``: a list of rows, the others an object); the first missing or
    unreadable one stops the stage (exit 2)."""
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        fail(
            f"{missing[0]}: missing{more}; the report needs the metrics, training curves and (MoE) routing"
            " of every arch of archs.run, task of finetune.tasks and scenario of finetune.scenarios"
            " (run `dvc repro` first)"
        )
    out = {}
    for key, path in files.items():
        try:
            out[key] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{path}: not readable as JSON ({e})")
        expected = list if key.startswith("curves/") else dict
        if not isinstance(out[key], expected):
            fail(f"{path}: expected a JSON {'array' if expected is list else 'object'}")
    return out


def curve_panels(params, inputs: dict) -> dict[str, dict[str, list]]:
    """The training curves by panel: ``pretrain`` and ``instruct`` ({arch: rows}), ``finetune <task>``
    ({"<arch> <scenario>": rows})."""
    panels: dict[str, dict[str, list]] = {}
    for stage in ("pretrain", "instruct"):
        panels[stage] = {arch: inputs[f"curves/{stage}/{arch}"] for arch in params.archs.run}
    for task in params.finetune.tasks:
        panels[f"finetune {task}"] = {
            f"{arch} {SCENARIO_LABEL.get(scenario, scenario)}": inputs[
                f"curves/finetune/{arch}-{task}-{scenario}"
            ]
            for arch in params.archs.run
            for scenario in params.finetune.scenarios
        }
    return panels


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        fail(f"python -m stages.report takes no arguments (got {args}); it reads params.yaml")
    params = load_params()
    inputs = figure_files(params)
    metrics = load_metrics({**needed_files(params), **inputs})

    from flanmoe.report import (
        ArchResults,
        ReportInputError,
        build_table,
        findings,
        summary,
        to_html,
        to_markdown,
    )

    archs = [
        ArchResults(
            name=arch,
            moe=params.arch_config(arch).moe is not None,
            twin_of=params.archs.variants[arch].dense_twin_of,
            pretrain=metrics[f"pretrain/{arch}"],
            evaluate={m: metrics[f"{arch}-{m}"] for m in ("pretrain", "instruct")},
            finetune={
                (t, s): metrics[f"{arch}-{t}-{s}"]
                for t in params.finetune.tasks
                for s in params.finetune.scenarios
            },
        )
        for arch in params.archs.run
    ]
    try:
        table = build_table(
            archs, params.finetune.tasks, params.finetune.scenarios, params.evaluate.fewshot_k
        )
    except ReportInputError as e:
        fail(f"metrics: {e} (files under {METRICS}/)")
    fs = findings(table)
    source = (
        f"Archs {', '.join(params.archs.run)}; fine-tuned tasks {', '.join(params.finetune.tasks) or 'none'}; "
        f"seed {params.base.seed} (one seed). From metrics/pretrain/ and metrics/evaluate/ of this pipeline run."
    )
    report = summary(table, fs)
    routing = {k.removeprefix("routing/"): v for k, v in metrics.items() if k.startswith("routing/")}
    curves = curve_panels(params, metrics)
    from flanmoe.report.plots import check_curve, check_routing, write_figures

    try:
        for arch, r in routing.items():
            check_routing(r, str(inputs[f"routing/{arch}"]))
        for key, path in inputs.items():
            if key.startswith("curves/"):
                check_curve(metrics[key], str(path))
    except ReportInputError as e:
        fail(str(e))

    with tracked_run(
        "report",
        params,
        ["archs"],
        outputs=[REPORT_JSON, REPORT_DIR / "report.md", REPORT_DIR / "report.html"],
    ) as run:
        run.log_params(
            {"finetune.tasks": params.finetune.tasks, "finetune.scenarios": params.finetune.scenarios}
        )
        with atomic_dir(REPORT_DIR) as tmp:
            figures = write_figures(tmp, table, routing, curves)
            (tmp / "report.md").write_text(to_markdown(table, fs, source=source, figures=figures))
            (tmp / "report.html").write_text(to_html(table, fs, source=source, figures=figures))
        write_json(REPORT_JSON, report)
        for f in figures:
            run.log_artifact(str(REPORT_DIR / f.file), REPORT_DIR.as_posix())
        run.log_metrics(flatten(report, sep="/"))
    verdicts = ", ".join(f"{f.id}: {f.verdict}" for f in fs if f.comparisons)
    pngs = ", ".join(f.file for f in figures)
    print(f"report: {REPORT_DIR}/report.md, report.html, {pngs}, {REPORT_JSON}; {verdicts}")


if __name__ == "__main__":
    main()
