"""Stage `evaluate`: score one exported model -> metrics/evaluate/s<seed>/<name>.json and evals/s<seed>/<name>/.

    python -m stages.evaluate <model_dir> [--task TASK] [--name NAME] [--seed N]

Without ``--task`` (scenario ``it_zero_few``): the held-out suites of ``evaluate.suites`` zero-shot
and few-shot (``evaluate.fewshot_k`` exemplars): MMLU-schema multiple choice by log-likelihood
(data/tokenized/mmlu), BBH-schema exact match of greedy generations (data/tokenized/bbh), and the
held-in instruction pairs of the instruct stage's validation split (``heldin``: exact match), then
the paper's normalized average over the held-out suites. ``probe`` (embedded corpus only,
data/tokenized/probe): the knowledge probe, per stratum, as a span-corruption cloze and as a bare
question (modes ``cloze``, ``question``; outside the normalized average). dvc.yaml runs it on the
pretrained-only and the instruction-tuned model of every arch: the instruction-tuning gain is their
difference.

With ``--task`` (scenarios ``direct`` and ``after_it``): the fine-tuned model on the task's test split
(data/tokenized/finetune/<task>): accuracy by rank classification when the task has at most
``evaluate.max_labels`` distinct targets, else exact match.

Every score has its 95% bootstrap CI, its chance level (the embedded suite's ``CHANCE``; for real
data 1/len(choices) for multiple choice, and for BBH the task's answer space: 1/k for k options listed
in the input, else 1/labels for at most ``evaluate.max_labels`` distinct targets, else 0; its basis is
in summary.json as ``chance_basis``) and a best-constant baseline.
``s<seed>`` is the replicate of ``base.seeds`` (``--seed``; it seeds exemplar draws and the bootstrap,
and picks the instruct stage's validation split of that replicate). ``evals/s<seed>/<name>/`` holds ``predictions.jsonl`` (prompt, target, prediction, correct per example),
``routing.json`` (MoE: expert load per layer per task) and ``summary.json`` (every figure).
``<name>`` defaults to ``<variant>-<stage>`` for models/<stage>/[s<seed>/]<variant> (``switch-instruct``),
the variant for models/finetune/[s<seed>/]<variant>, else the directory's name.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from flanmoe.atomic import atomic_dir, write_json
from flanmoe.config import flatten
from flanmoe.grid import EVAL_MODELS, HELDOUT, IT_ZERO_FEW, MODES, PROBE_MODES, eval_name, parse_finetune_run
from stages.common import (
    arch_tags,
    dvc_md5,
    effective_seed,
    fail,
    for_seed,
    load_params,
    require,
    require_device,
    require_model,
    run_stage,
    tracked_run,
)
from stages.paths import EVALS, METRICS, TOKENIZED, seed_dir

OUT_METRICS = METRICS / "evaluate"


def _layout(model_dir: Path) -> tuple[str, str] | None:
    """(stage, variant) of models/<stage>/[s<seed>/]<variant>, else None."""
    parts = model_dir.resolve().parts
    if len(parts) >= 4 and parts[-4] == "models" and re.fullmatch(r"s\d+", parts[-2]):
        return parts[-3], parts[-1]
    if len(parts) >= 3 and parts[-3] == "models":
        return parts[-2], parts[-1]
    return None


def default_name(model_dir: Path) -> str:
    layout = _layout(model_dir)
    if layout is not None:
        stage, variant = layout
        return variant if stage == "finetune" else eval_name(variant, stage)
    return model_dir.resolve().name


def describe(model_dir: Path, task: str | None) -> dict[str, str]:
    """MLflow tags from the layout models/<stage>/[s<seed>/]<variant> (arch, scenario, source stage, task)."""
    tags: dict[str, str] = {"model_dir": str(model_dir)}
    layout = _layout(model_dir)
    if layout is not None:
        stage, variant = layout
        tags["model_stage"] = stage
        tags["arch"] = variant.split("-")[0]
        if stage == "finetune":  # <arch>-<task>-<scenario>[-freeze_<option>] (the freeze ablation)
            run = parse_finetune_run(variant)
            tags["scenario"] = run.scenario if run else variant.rsplit("-", 1)[-1]
            if run and run.freeze:
                tags["freeze"] = run.freeze
        elif stage in EVAL_MODELS:
            tags["scenario"] = IT_ZERO_FEW
            tags["instruction_tuned"] = str(stage == "instruct").lower()
    if task is not None:
        tags["task"] = task
    return tags


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model directory (config.json, ...)")
    parser.add_argument("--task", help="a fine-tuning task of data/tokenized/finetune: score its test split")
    parser.add_argument(
        "--name", help="output name (metrics/evaluate/s<seed>/<name>.json, evals/s<seed>/<name>/)"
    )
    parser.add_argument(
        "--seed", type=int, help="the replicate of base.seeds (may be left out with one seed)"
    )
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage line and the error
        raise SystemExit(2 if e.code else 0) from None


def _heldin_rows(params, decode) -> list[dict]:
    """The instruct stage's validation pairs (never trained on), as the tokenize stage encoded them;
    targets decoded to text."""
    from flanmoe.data.arrow import load_from_disk
    from flanmoe.train.data import split_validation

    ds = load_from_disk(TOKENIZED / "flan")
    _, val = split_validation(ds, params.instruct.val_examples, effective_seed(params, "instruct"))
    if params.evaluate.heldin_examples is not None:  # checked <= instruct.val_examples (flanmoe/config.py)
        val = val.select(range(params.evaluate.heldin_examples))
    return [
        {"input_ids": x, "targets": decode(y), "task": t}
        for x, y, t in zip(val["input_ids"], val["labels"], val["task_name"], strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    layout = _layout(args.model_dir)  # the arch (and whether it is fine-tuned) for base.extra_seeds
    arch = layout[1].split("-")[0] if layout else None
    params = for_seed(load_params(), args.seed, arch=arch, extra=not (layout and layout[0] == "finetune"))
    out_metrics, evals = OUT_METRICS / seed_dir(params.base.seed), EVALS / seed_dir(params.base.seed)
    cfg = params.evaluate
    require_device("evaluate.device", cfg.device)
    model_dir: Path = args.model_dir
    if not (model_dir / "config.json").is_file():
        fail(f"model_dir: {model_dir} is not an exported model directory (no config.json)")
    if not (model_dir / "tokenizer.json").is_file():
        fail(f"model_dir: {model_dir} has no tokenizer.json (export the model with its tokenizer)")
    name = args.name or default_name(model_dir)
    if not name or "/" in name:
        fail(f"--name: {name!r} must be a plain file name")
    embedded = {s: getattr(params.prepare, s).kind == "embedded" for s in ("mmlu", "bbh", "finetune")}
    if args.task is not None:
        task_dir = TOKENIZED / "finetune" / args.task
        if not task_dir.is_dir():
            root = TOKENIZED / "finetune"
            have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            fail(f"--task: {args.task!r} is not in {root} (tasks: {have})")
        needed = [task_dir]
    else:
        if "probe" in cfg.suites and not (TOKENIZED / "probe" / "dataset_dict.json").is_file():
            fail(
                f"evaluate.suites: 'probe' needs the knowledge probe in {TOKENIZED / 'probe'}, which has none "
                "(only the embedded pretraining corpus has one: remove 'probe' from evaluate.suites)"
            )
        needed = [TOKENIZED / s for s in cfg.suites if s != "heldin"]
        if "heldin" in cfg.suites:
            needed.append(TOKENIZED / "flan")
    require(*needed, hint="run the tokenize stage first (dvc repro tokenize)")

    import torch

    from flanmoe.data.arrow import load_from_disk  # not datasets: its import alone costs ~0.7 s
    from flanmoe.data.embedded import CHANCE
    from flanmoe.data.tokenizer import load_tokenizer
    from flanmoe.eval.suites import EvalSettings, Evaluator, label_set
    from flanmoe.model.pretrained import load_config, load_pretrained

    try:
        model_cfg = load_config(model_dir)
    except (ValueError, FileNotFoundError) as e:
        fail(f"model_dir: {e}")
    layout = _layout(model_dir)
    writer = f"the {layout[0]} stage" if layout else "the stage"
    require_model(model_dir, hint=f"rerun {writer} that writes it (dvc repro), or restore it (dvc checkout)")
    if args.task is not None:
        splits = load_from_disk(TOKENIZED / "finetune" / args.task)
        if "test" not in splits or len(splits["test"]) == 0:
            fail(f"--task: {TOKENIZED / 'finetune' / args.task} has no 'test' split with examples")
    elif "probe" in cfg.suites:
        from flanmoe.eval.probe import check_probe, evaluate_probe

        probe = load_from_disk(TOKENIZED / "probe")
        try:
            check_probe(probe, where=str(TOKENIZED / "probe"))
        except ValueError as e:
            fail(str(e))

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else None
    model = load_pretrained(model_dir, device, dtype, moe_overrides={"dropless": cfg.dropless}).eval()
    tok = load_tokenizer(model_dir)
    tok.encode_special_tokens = True  # as the tokenize stage encodes
    seed = effective_seed(params, "evaluate")
    settings = EvalSettings(
        mmlu_format=cfg.mmlu_format,
        mc_headline=cfg.mc_headline,
        fewshot_k=cfg.fewshot_k,
        max_input_length=cfg.max_input_length or params.tokenize.max_input_length,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        bootstrap=cfg.bootstrap,
        confidence=cfg.confidence,
        seed=seed,
        max_examples=cfg.max_examples,
        max_labels=cfg.max_labels,
        answer_form=params.tokenize.answer_form,
    )
    ev = Evaluator(model, tok, settings)
    tags = describe(model_dir, args.task)
    tags.update(arch_tags(tags.get("arch"), model_cfg))
    tags["model_md5"] = dvc_md5(model_dir)  # the logged model's tag of the same name
    if tags.get("model_stage") == "finetune":  # the fine-tuning params DVC made this model with
        tags.setdefault("freeze", params.finetune.freeze)
    results = []
    with tracked_run(
        f"evaluate@{name}",
        params,
        ["evaluate"],
        tags=tags,
        inputs={path: "evaluation" for path in needed},
        outputs=[out_metrics / f"{name}.json"],
    ) as run:
        if args.task is not None:
            test = splits["test"]
            train = splits["train"] if "train" in splits else test
            labels = label_set(train["targets"], cfg.max_labels) if "targets" in train.column_names else None
            if labels is not None and not set(t.strip() for t in test["targets"]) <= set(labels):
                labels = None  # a test target outside the label set: open-ended, exact match
            rows = [
                {"input_ids": x, "targets": t, "task": args.task}
                for x, t in zip(test["input_ids"], test["targets"], strict=True)
            ]
            chance = {args.task: CHANCE["finetune"].get(args.task, 0.0)} if embedded["finetune"] else None
            if chance is None and labels is not None:
                chance = {args.task: 1.0 / len(labels)}
            results.append(ev.pairs("finetune", rows, chance, {args.task: labels} if labels else None))
        else:
            if "mmlu" in cfg.suites:
                mmlu = load_from_disk(TOKENIZED / "mmlu")
                for shots in (0, cfg.fewshot_k):
                    results.append(ev.mmlu(mmlu, shots, cfg.mmlu_split))
            if "bbh" in cfg.suites:
                bbh = load_from_disk(TOKENIZED / "bbh")
                chance = CHANCE["bbh"] if embedded["bbh"] else None
                for shots in (0, cfg.fewshot_k):
                    results.append(ev.bbh(bbh, shots, chance))
            if "heldin" in cfg.suites:
                results.append(ev.pairs("heldin", _heldin_rows(params, ev.decode)))
            if "probe" in cfg.suites:  # stored facts: the cloze, then the bare question
                results.extend(evaluate_probe(ev, probe, mode) for mode in PROBE_MODES)
        metrics, summary = _collect(results, settings)
        routing = ev.routing_summary()
        with atomic_dir(evals / name) as tmp:
            with (tmp / "predictions.jsonl").open("w") as f:
                for res in results:
                    for rec in res.records:
                        f.write(json.dumps(rec, sort_keys=True) + "\n")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            (tmp / "routing.json").write_text(json.dumps(routing, indent=2, sort_keys=True) + "\n")
        write_json(out_metrics / f"{name}.json", metrics)
        run.log_metrics(flatten(metrics, sep="/"))
        run.log_artifacts(evals / name, "evaluation")
        run.log_table([rec for res in results for rec in res.records], "evaluation/predictions_table.json")
    heldout = [r for r in results if r.suite in HELDOUT]
    line = ", ".join(f"{r.suite} {r.mode} {r.summary['score']:.3f}" for r in results)
    print(
        f"evaluate {name}: {line}"
        + (f"; normalized average {metrics.get('normalized_average')}" if heldout else "")
    )


def _collect(results, settings) -> tuple[dict, dict]:
    """(metrics for dvc: headline figures and per-task scores, full summary)."""
    from flanmoe.eval.metrics import normalized_average

    metrics: dict = {}
    summary: dict = {}
    for r in results:
        s = r.summary
        metrics.setdefault(r.suite, {})[r.mode] = {
            **{k: v for k, v in s.items() if k not in ("tasks", "average")},
            "tasks": {
                t: {k: v[k] for k in ("score", "score_lo", "score_hi", "chance", "best_constant")}
                for t, v in s["tasks"].items()
            },
        }
        summary.setdefault(r.suite, {})[r.mode] = s
    for mode in MODES:
        parts = {
            r.suite: (r.values, r.summary["chance"]) for r in results if r.suite in HELDOUT and r.mode == mode
        }
        if parts:
            point, lo, hi = normalized_average(parts, settings.bootstrap, settings.confidence, settings.seed)
            avg = {"score": round(point, 4), "score_lo": round(lo, 4), "score_hi": round(hi, 4)}
            metrics.setdefault("normalized_average", {})[mode] = avg
            summary.setdefault("normalized_average", {})[mode] = {**avg, "suites": sorted(parts)}
    return metrics, summary


if __name__ == "__main__":
    run_stage(main)
