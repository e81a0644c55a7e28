"""Stage `finetune`: single-task fine-tuning of one arch on one task, in one scenario.

    python -m stages.finetune <arch> <task> <scenario> [--seed N]   # dvc.yaml: matrix arch x task x scenario x seed

Scenario `direct` starts from models/pretrain/s<seed>/<arch> (the paper's scenario 1), `after_it` from
models/instruct/s<seed>/<arch> (scenario 3). Trains on data/tokenized/finetune/<task> `train`, validates on its
`validation` split, stops early when the validation loss stops improving and exports the best model
to models/finetune/s<seed>/<arch>-<task>-<scenario>/ (with ``--freeze OPTION``, the freeze ablation's run:
``...-<scenario>-freeze_<OPTION>/``). `finetune.freeze` freezes the gate, the experts or every
non-MoE parameter (the paper's ablation; a dense arch accepts only `none`); `dropout_rate` and
`expert_dropout` apply to this stage only.
"""

from __future__ import annotations

from flanmoe.grid import FREEZE_OPTIONS, INIT_STAGE, FinetuneRun
from stages.common import dvc_md5, fail, require, require_model, run_stage
from stages.paths import MODELS, TOKENIZED, TOKENIZER, seed_dir
from stages.training import StageData, parse_call, run_training


def main(argv: list[str] | None = None) -> None:
    call = parse_call("finetune", argv, positionals=("task", "scenario"), freeze=True)
    params, arch, task, scenario = call.params, call.arch, call.args.task, call.args.scenario
    freeze = call.args.freeze  # the freeze ablation (dvc.yaml finetune_freeze): this run's option
    if freeze is None:
        freeze = params.finetune.freeze
    elif freeze not in FREEZE_OPTIONS:
        fail(f"--freeze: {freeze!r} is not one of {list(FREEZE_OPTIONS)}")
    if scenario not in INIT_STAGE:
        fail(f"scenario: unknown scenario {scenario!r}; one of {sorted(INIT_STAGE)}")
    cfg = params.finetune
    data_dir = TOKENIZED / "finetune" / task
    if not data_dir.is_dir():
        have = (
            sorted(p.name for p in (TOKENIZED / "finetune").glob("*"))
            if (TOKENIZED / "finetune").is_dir()
            else []
        )
        fail(f"task: {task!r} is not in {TOKENIZED / 'finetune'} (tasks: {have}); check finetune.tasks")
    init_dir = MODELS / INIT_STAGE[scenario] / seed_dir(params.base.seed) / arch
    require(TOKENIZER, hint="run the tokenize stage first (dvc repro tokenize)")
    init_stage = INIT_STAGE[scenario]
    redo = f"dvc repro {init_stage}@{arch}-{params.base.seed}"
    require(init_dir, hint=f"run the {init_stage} stage first ({redo})")
    require_model(init_dir, hint=f"rerun the {init_stage} stage that writes it ({redo})")
    if freeze != "none" and params.arch_config(arch).moe is None:
        fail(f"finetune.freeze: {freeze!r} needs an MoE arch; {arch!r} is dense (only 'none')")

    import datasets

    splits = datasets.load_from_disk(str(data_dir))
    for split in ("train", "validation"):
        if split not in splits or len(splits[split]) == 0:
            fail(f"task: {data_dir} has no {split!r} split with examples")

    call.relaunch_if_parallel()

    def make_data(seed: int) -> StageData:
        from flanmoe.train.data import TokenBudgetBatches, eval_batches

        train = splits["train"]
        sampler = TokenBudgetBatches(train, cfg.max_tokens, seed)
        if sampler.groups_per_epoch() < cfg.groups:
            fail(f"finetune.max_tokens: {cfg.max_tokens} gives fewer micro-batches than nproc x grad_accum")
        lengths = [(len(x), len(y)) for x, y in zip(train["input_ids"], train["labels"], strict=True)]
        return StageData(
            sampler=sampler,
            val_batches=eval_batches(splits["validation"], max_tokens=cfg.max_tokens),
            enc_len=max(1, round(sum(a for a, _ in lengths) / len(lengths))),
            dec_len=max(1, round(sum(b for _, b in lengths) / len(lengths))),
            metrics={"task": task, "scenario": scenario, "freeze": freeze, "train_examples": len(train)},
        )

    overrides: dict = {}
    if cfg.dropout_rate is not None:
        overrides["dropout_rate"] = cfg.dropout_rate
    if cfg.expert_dropout is not None:
        overrides["moe"] = {"expert_dropout": cfg.expert_dropout}
    run_training(
        "finetune",
        arch,
        params,
        dvc_md5(data_dir) + dvc_md5(init_dir),
        make_data,
        init_dir=init_dir,
        variant=FinetuneRun(arch, task, scenario, freeze if freeze != params.finetune.freeze else None).name,
        model_overrides=overrides,
        freeze=freeze,
        tags={"task": task, "scenario": scenario},
        inputs={data_dir: "training"},
    )


if __name__ == "__main__":
    run_stage(main)
