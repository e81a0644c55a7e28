"""Stage `report`: the evaluation metrics of every arch -> the paper-style table and its findings.

    python -m stages.report

Reads, for every seed ``s<seed>`` of ``base.seeds`` and arch of ``archs.run`` (and of
``base.extra_seeds`` for an arch of ``base.extra_archs``, its pretrain and evaluate files only):
metrics/pretrain/s<seed>/<arch>.json (params, active params, FLOPs/token),
metrics/evaluate/s<seed>/<arch>-<pretrain|instruct>.json (held-out suites, scenario 2) and, for every
task of ``finetune.tasks`` and scenario of ``finetune.scenarios`` (and the freezing ablation's
``after_it-freeze_<option>``), metrics/evaluate/s<seed>/<arch>-<task>-<scenario>.json (scenarios 1
and 3). Several seeds are aggregated (``flanmoe.report.seeds``: mean, CI over seeds and examples). For
the figures: the training curves plots/<stage>/s<seed>/... (mean over seeds) and, for every MoE arch,
evals/s<seed>/<arch>-instruct/routing.json of the first seed (expert load per layer per task). For the
paired intervals of the findings and the knowledge section: evals/s<seed>/<arch>-<model>/predictions.jsonl
(the per-question records; without them the intervals are MOVER's, labelled so). Writes
<report.dir> (docs/report; the study preset: docs/study): report.md and report.html with the PNG
figures in <report.dir>/figures/ (git-tracked, so
the report is read where the code is; the HTML links the PNGs by file name) and metrics/report.json
(the IT gains, fine-tuning gains, every finding's verdict and, with a probe section, the knowledge
scores per stratum: DVC metrics), and logs them to MLflow
(run ``report``). A missing or unreadable input file stops it with exit status 2 and nothing written.
The table and the findings come from ``flanmoe.report``, the figures from ``flanmoe.report.plots``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from flanmoe.atomic import atomic_dir, write_json
from flanmoe.config import flatten
from flanmoe.env import machine
from flanmoe.grid import finetune_runs, freeze_scenario, scenario_label
from stages.common import fail, load_params, run_stage, tracked_run
from stages.paths import EVALS, METRICS, PLOTS, seed_dir

REPORT_JSON = METRICS / "report.json"
FIGURES = "figures"  # <report.dir>/figures/*.png


def scenarios(params) -> list[str]:
    """The fine-tuning scenarios of the table: ``finetune.scenarios`` and, with the freezing ablation,
    ``after_it-freeze_<option>`` per option."""
    return list(params.finetune.scenarios) + [freeze_scenario(f) for f in params.freeze_ablation.freeze]


def _finetuned(params, arch: str) -> list[tuple[str, str]]:
    """(task, scenario) of every fine-tuned model of ``arch`` (the ablation's only for its archs)."""
    ablation = params.freeze_ablation.freeze if arch in params.freeze_ablation.archs else []
    runs = finetune_runs(arch, params.finetune.tasks, params.finetune.scenarios, ablation)
    return [(r.task, r.report_scenario) for r in runs]


def all_seeds(params) -> list[int]:
    """``base.seeds``, then ``base.extra_seeds`` (which only the archs of ``base.extra_archs`` ran)."""
    return [*params.base.seeds, *params.base.extra_seeds]


def needed_files(params) -> dict[str, Path]:
    """Every metrics file the report reads, keyed ``s<seed>/pretrain/<arch>``, ``s<seed>/<arch>-<model>``
    (every seed of the arch, ``Params.seeds_of``), ``s<seed>/<arch>-<task>-<scenario>`` (every seed of
    ``base.seeds``)."""
    files: dict[str, Path] = {}
    for s in all_seeds(params):
        seed = seed_dir(s)
        for arch in params.archs.run:
            if s not in params.seeds_of(arch):
                continue
            files[f"{seed}/pretrain/{arch}"] = METRICS / "pretrain" / seed / f"{arch}.json"
            for model in ("pretrain", "instruct"):
                files[f"{seed}/{arch}-{model}"] = METRICS / "evaluate" / seed / f"{arch}-{model}.json"
            if s not in params.base.seeds:
                continue
            for task, scenario in _finetuned(params, arch):
                name = f"{arch}-{task}-{scenario}"
                files[f"{seed}/{name}"] = METRICS / "evaluate" / seed / f"{name}.json"
    return files


def figure_files(params) -> dict[str, Path]:
    """Every file the figures read, keyed ``routing/<arch>`` (MoE archs: the instruction-tuned model's
    expert load, first seed of ``base.seeds``) and ``curves/s<seed>/<stage>/<name>`` (training curves,
    every seed)."""
    files: dict[str, Path] = {}
    first = seed_dir(params.base.seeds[0])
    for arch in params.archs.run:
        if params.arch_config(arch).moe is not None:
            files[f"routing/{arch}"] = EVALS / first / f"{arch}-instruct" / "routing.json"
    for seed in map(seed_dir, params.base.seeds):
        for arch in params.archs.run:
            for stage in ("pretrain", "instruct"):
                files[f"curves/{seed}/{stage}/{arch}"] = PLOTS / stage / seed / f"{arch}.json"
            for task, scenario in _finetuned(params, arch):
                name = f"{arch}-{task}-{scenario}"
                files[f"curves/{seed}/finetune/{name}"] = PLOTS / "finetune" / seed / f"{name}.json"
    return files


def load_metrics(files: dict[str, Path]) -> dict[str, dict | list]:
    """The files as JSON (``curves/...``: a list of rows, the others an object); the first missing or
    unreadable one stops the stage (exit 2)."""
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        fail(
            f"{missing[0]}: missing{more}; the report needs the metrics, training curves and (MoE) routing"
            " of every arch of archs.run, task of finetune.tasks, scenario of finetune.scenarios and seed"
            " of base.seeds (run `dvc repro` first)"
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


def over_seeds(params, metrics: dict) -> dict[str, dict]:
    """The metrics of every seed that has them as one (``flanmoe.report.seeds.aggregate``), keyed
    without the seed: an arch's pretrained and instruction-tuned models over its own seeds."""
    from flanmoe.report.seeds import aggregate

    per_key: dict[str, list] = {}
    for seed in map(seed_dir, all_seeds(params)):
        for k, v in metrics.items():
            if k.startswith(f"{seed}/"):
                per_key.setdefault(k.split("/", 1)[1], []).append(v)
    return {k: aggregate(v) for k, v in per_key.items()}


def routing_info(params, arch: str) -> dict | None:
    """What the router and aux-loss findings compare MoE archs by (None for a dense arch)."""
    moe = params.arch_config(arch).moe
    if moe is None:
        return None
    return {
        "router": moe.router,
        "decoder_router": moe.router_for("decoder"),
        "num_experts": moe.num_experts,
        "load_balance_coef": moe.load_balance_coef,
        "z_loss_coef": moe.resolved_z_loss_coef,
    }


def curve_panels(params, inputs: dict) -> dict[str, dict[str, list]]:
    """The training curves by panel, each series the mean over the seeds (``mean_curve``):
    ``pretrain`` and ``instruct`` ({arch: rows}), ``finetune <task>, <scenario>`` ({arch: rows}) and,
    per arch of the freezing ablation, ``finetune <task>, <arch> after IT, freezing`` ({"after IT" or
    "<part> frozen": rows})."""
    from flanmoe.report.seeds import mean_curve

    seeds = [seed_dir(s) for s in params.base.seeds]

    def rows(stage: str, name: str) -> list:
        return mean_curve([inputs[f"curves/{s}/{stage}/{name}"] for s in seeds])

    panels: dict[str, dict[str, list]] = {}
    for stage in ("pretrain", "instruct"):
        panels[stage] = {arch: rows(stage, arch) for arch in params.archs.run}
    for task in params.finetune.tasks:
        for scenario in params.finetune.scenarios:
            panels[f"finetune {task}, {scenario_label(scenario)}"] = {
                arch: rows("finetune", f"{arch}-{task}-{scenario}") for arch in params.archs.run
            }
        for arch in params.freeze_ablation.archs:
            panels[f"finetune {task}, {arch} after IT, freezing"] = {
                scenario_label(s).removeprefix("after IT, "): rows("finetune", f"{arch}-{task}-{s}")
                for t, s in _finetuned(params, arch)
                if t == task and s.startswith("after_it")
            }
    return panels


def prediction_files(params) -> dict[tuple[str, ...], dict[int, Path]]:
    """The per-question records of every evaluation, ``{seed: file}``, keyed (arch, "pretrain" |
    "instruct": every seed of the arch) and, for fine-tuned models, (arch, task, scenario: every seed
    of base.seeds): evals/s<seed>/<name>/predictions.jsonl."""
    files: dict[tuple[str, ...], dict[int, Path]] = {}
    for arch in params.archs.run:
        for m in ("pretrain", "instruct"):
            files[(arch, m)] = {
                s: EVALS / seed_dir(s) / f"{arch}-{m}" / "predictions.jsonl" for s in params.seeds_of(arch)
            }
        for t, sc in _finetuned(params, arch):
            name = f"{arch}-{t}-{sc}"
            files[(arch, t, sc)] = {
                s: EVALS / seed_dir(s) / name / "predictions.jsonl" for s in params.base.seeds
            }
    return files


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{path}: line {i} is not JSON ({e})")
        if not isinstance(row, dict):
            fail(f"{path}: line {i} is not a JSON object")
        rows.append(row)
    return rows


def prediction_records(params) -> dict[tuple[str, ...], dict[int, list[dict]]]:
    """The rows of ``prediction_files`` of every evaluation that has them for every seed, ``{seed:
    rows}`` (an older run has none: the report then falls back to intervals from the metrics). A line
    that is not a JSON object stops the stage (exit 2), naming the file and line."""
    return {
        key: {s: _jsonl(f) for s, f in files.items()}
        for key, files in prediction_files(params).items()
        if all(f.is_file() for f in files.values())
    }


def paired_answers(params, records: dict) -> dict:
    """Per evaluation the held-out (or fine-tuned test) per-question results of every seed, for the
    findings' paired intervals (``flanmoe.report.heldout_pairs``). A held-out row lacking a key stops
    the stage (exit 2), naming the file."""
    from flanmoe.report.heldout_pairs import heldout_answers

    files = prediction_files(params)
    out = {}
    for key, seeds in records.items():
        try:
            out[key] = {s: heldout_answers(rows, str(files[key][s])) for s, rows in seeds.items()}
        except ValueError as e:
            fail(str(e))
    return out


def knowledge_pairs(params, table, records: dict) -> list:
    """Paired differences on the held-out people from every evaluation's per-question records
    (``flanmoe.report.paired``); none when a record file is missing (the table says nothing then)."""
    from flanmoe.report.findings import moe_dense_pairs
    from flanmoe.report.paired import paired_rows

    keys = [(arch, model) for arch in params.archs.run for model in ("pretrain", "instruct")]
    if not all(k in records for k in keys):
        return []
    by_model = {f"{arch}-{model}": records[(arch, model)] for arch, model in keys}
    try:
        return paired_rows(by_model, params.archs.run, moe_dense_pairs(table), table.knowledge.strata)
    except ValueError as e:  # a probe row lacking a key
        fail(str(e))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        fail(f"python -m stages.report takes no arguments (got {args}); it reads params.yaml")
    params = load_params()
    report_dir = Path(params.report.dir)
    inputs = figure_files(params)
    loaded = load_metrics({**needed_files(params), **inputs})
    metrics = {**over_seeds(params, loaded), **{k: loaded[k] for k in inputs}}

    from flanmoe.report import (
        ArchResults,
        ReportInputError,
        build_table,
        findings,
        summary,
        to_html,
        to_markdown,
    )
    from flanmoe.report.findings import pair_it_gains

    archs = [
        ArchResults(
            name=arch,
            moe=params.arch_config(arch).moe is not None,
            twin_of=params.archs.variants[arch].dense_twin_of,
            pretrain=metrics[f"pretrain/{arch}"],
            evaluate={m: metrics[f"{arch}-{m}"] for m in ("pretrain", "instruct")},
            finetune={(t, s): metrics[f"{arch}-{t}-{s}"] for t, s in _finetuned(params, arch)},
            routing=routing_info(params, arch),
        )
        for arch in params.archs.run
    ]
    try:
        table = build_table(
            archs,
            params.finetune.tasks,
            scenarios(params),
            params.evaluate.fewshot_k,
            seeds=len(params.base.seeds),
            arch_seeds={arch: len(params.seeds_of(arch)) for arch in params.archs.run},
        )
    except ReportInputError as e:
        fail(f"metrics: {e} (files under {METRICS}/)")
    records = prediction_records(params)
    answers = paired_answers(params, records)
    fs = findings(table, answers)
    pair_it_gains(table, answers)  # after the findings, whose MOVER fallbacks use the unpaired cells
    if table.knowledge is not None:
        table.knowledge = dataclasses.replace(table.knowledge, paired=knowledge_pairs(params, table, records))
    seeds = params.base.seeds
    seed_text = (
        f"seed {seeds[0]} (one seed)"
        if len(seeds) == 1
        else f"seeds {', '.join(map(str, seeds))} (mean over {len(seeds)} seeds; the expert-load figures:"
        f" seed {seeds[0]})"
    )
    extra = [a for a in params.archs.run if a in params.base.extra_archs] if params.base.extra_seeds else []
    if extra:
        seed_text += (
            f"; {', '.join(extra)} also seeds {', '.join(map(str, params.base.extra_seeds))}"
            " (base.extra_seeds: pretrained and instruction-tuned models)"
        )
    source = (
        f"Archs {', '.join(params.archs.run)}; fine-tuned tasks {', '.join(params.finetune.tasks) or 'none'}; "
        f"{seed_text}. From metrics/pretrain/ and metrics/evaluate/ of this pipeline run."
    )
    host = machine()
    threads = params.pretrain.parallel.threads or "torch's default"
    source += (
        f" Run on {host['cpu_model']}, {host['cpus']} CPUs, torch {host['torch_version']}, training threads per"
        f" process (pretrain.parallel.threads): {threads}; the scores reproduce bit for bit on the same CPU"
        " model only."
    )
    form = params.tokenize.answer_form
    source += (
        " Answers in the sentinel slot (tokenize.answer_form: sentinel): every instruction pair and every"
        " scored prompt ends with <extra_id_0>, the answer is the span after it."
        if form == "sentinel"
        else " Answers in FLAN's plain form (tokenize.answer_form: plain)."
    )
    report = summary(table, fs)
    routing = {k.removeprefix("routing/"): v for k, v in metrics.items() if k.startswith("routing/")}
    curves = curve_panels(params, metrics)
    from flanmoe.report.plots import write_figures
    from flanmoe.report.training_figures import check_curve, check_routing

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
        outputs=[REPORT_JSON, report_dir / "report.md", report_dir / "report.html"],
    ) as run:
        run.log_params(
            {"finetune.tasks": params.finetune.tasks, "finetune.scenarios": params.finetune.scenarios}
        )
        with atomic_dir(report_dir) as tmp:
            (tmp / FIGURES).mkdir()  # the PNGs alone in a folder: dvc.yaml's top-level plots show it
            figures = [
                dataclasses.replace(f, file=f"{FIGURES}/{f.file}")
                for f in write_figures(tmp / FIGURES, table, routing, curves, seeds)
            ]
            (tmp / "report.md").write_text(to_markdown(table, fs, source=source, figures=figures))
            (tmp / "report.html").write_text(to_html(table, fs, source=source, figures=figures))
        write_json(REPORT_JSON, report)
        for f in figures:
            run.log_artifact(str(report_dir / f.file), (report_dir / FIGURES).as_posix())
        run.log_metrics(flatten(report, sep="/"))
    verdicts = ", ".join(f"{f.id}: {f.verdict}" for f in fs if f.comparisons)
    pngs = ", ".join(f.file for f in figures)
    print(f"report: {report_dir}/report.md, report.html, {pngs}, {REPORT_JSON}; {verdicts}")


if __name__ == "__main__":
    run_stage(main)
