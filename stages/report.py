"""Stage `report`: the evaluation metrics of every arch -> the paper-style table and its findings.

    python -m stages.report

Reads, for every arch of ``archs.run``: metrics/pretrain/<arch>.json (params, active params,
FLOPs/token), metrics/evaluate/<arch>-<pretrain|instruct>.json (held-out suites, scenario 2) and, for
every task of ``finetune.tasks`` and scenario of ``finetune.scenarios``,
metrics/evaluate/<arch>-<task>-<scenario>.json (scenarios 1 and 3). Writes docs/report/report.md and
docs/report/report.html (git-tracked, so the report is read where the code is) and
metrics/report.json (the IT gains, fine-tuning gains and every finding's verdict: DVC metrics), and
logs them to MLflow (run ``report``). A missing or unreadable metrics file stops it with exit status 2
and nothing written. The table and the findings come from ``flanmoe.report``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flanmoe.config import flatten
from stages.common import METRICS, atomic_dir, fail, load_params, tracked_run, write_json

REPORT_DIR = Path("docs") / "report"
REPORT_JSON = METRICS / "report.json"


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


def load_metrics(files: dict[str, Path]) -> dict[str, dict]:
    """The files as dicts; the first missing or unreadable one stops the stage (exit 2)."""
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        fail(
            f"{missing[0]}: missing{more}; the report needs the metrics of every arch of archs.run, "
            "task of finetune.tasks and scenario of finetune.scenarios (run `dvc repro` first)"
        )
    out = {}
    for key, path in files.items():
        try:
            out[key] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{path}: not readable as JSON ({e})")
        if not isinstance(out[key], dict):
            fail(f"{path}: expected a JSON object")
    return out


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        fail(f"python -m stages.report takes no arguments (got {args}); it reads params.yaml")
    params = load_params()
    files = needed_files(params)
    metrics = load_metrics(files)

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
            (tmp / "report.md").write_text(to_markdown(table, fs, source=source))
            (tmp / "report.html").write_text(to_html(table, fs, source=source))
        write_json(REPORT_JSON, report)
        run.log_metrics(flatten(report, sep="/"))
    verdicts = ", ".join(f"{f.id}: {f.verdict}" for f in fs if f.comparisons)
    print(f"report: {REPORT_DIR}/report.md, report.html, {REPORT_JSON}; {verdicts}")


if __name__ == "__main__":
    main()
