"""Stage `instruct`: instruction tuning of one arch's pretrained model -> models/instruct/s<seed>/<arch>/.

    python -m stages.instruct <arch> [--seed N]   # dvc.yaml: matrix archs.run x base.seeds;
                                                  # instruct_extra: base.extra_archs x base.extra_seeds

Starts from models/pretrain/s<seed>/<arch>/, trains on data/tokenized/flan (a seeded held-out slice is the
validation set) mixed as FLAN does (examples-proportional with a per-task cap and a temperature:
`instruct.mixture`), plus `instruct.mixture.replay` of span-corruption chunks of data/tokenized/pretrain
(so that instruction tuning does not erase what pretraining stored: docs/calibration.md, v2), in
micro-batches formed by length under `instruct.max_tokens`. The loss is on the
target tokens only (the encoder reads the instruction; padding is ignored). Outputs as every training
stage (`stages/training.py`), plus the mixture's shares in the metrics file.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import dvc_md5, fail, require, require_model, run_stage
from stages.paths import MODELS, TOKENIZED, TOKENIZER, seed_dir
from stages.training import StageData, parse_call, run_training

DATA_DIR = TOKENIZED / "flan"
PRETRAIN_DIR = TOKENIZED / "pretrain"  # replayed chunks (instruct.mixture.replay)


def template_shares(template_types: list[str]) -> dict[str, float]:
    """Shares of zero-shot, few-shot and with-options examples (FLAN ``template_type``: ``zs_opt``,
    ``zs_noopt``, ``fs_opt``, ``fs_noopt``)."""
    n = max(len(template_types), 1)
    return {
        "zero_shot": sum(t.startswith("zs") for t in template_types) / n,
        "few_shot": sum(t.startswith("fs") for t in template_types) / n,
        "with_options": sum(t.endswith("_opt") for t in template_types) / n,
    }


def with_replay(mixed, share: float, seed: int, pretrain_dir: Path = PRETRAIN_DIR):
    """``mixed`` (input_ids, labels) plus pretraining chunks, their padding stripped, so that they are
    ``share`` of the result; the chunks drawn without replacement, seeded. Returns (dataset, chunks)."""
    import datasets
    import numpy as np

    pre = datasets.load_from_disk(str(pretrain_dir)).with_format("numpy")
    n = min(len(pre), round(share / (1 - share) * len(mixed)))
    pick = np.sort(np.random.default_rng([seed, 7]).choice(len(pre), n, replace=False))
    chunks = pre[pick]
    strip = [[row[row != 0].tolist() for row in chunks[col]] for col in ("input_ids", "labels")]
    replay = datasets.Dataset.from_dict(
        {"input_ids": strip[0], "labels": strip[1]},
        features=mixed.select_columns(["input_ids", "labels"]).features,
    )
    return datasets.concatenate_datasets([mixed.select_columns(["input_ids", "labels"]), replay]), n


def main(argv: list[str] | None = None) -> None:
    call = parse_call("instruct", argv)
    params, arch, cfg = call.params, call.arch, call.cfg
    init_dir = MODELS / "pretrain" / seed_dir(params.base.seed) / arch
    require(DATA_DIR, TOKENIZER, hint="run the tokenize stage first (dvc repro tokenize)")
    redo = f"dvc repro pretrain@{arch}-{params.base.seed}"
    require(init_dir, hint=f"run the pretrain stage first ({redo})")
    require_model(init_dir, hint=f"rerun the pretrain stage that writes it ({redo})")

    import datasets

    ds = datasets.load_from_disk(str(DATA_DIR))
    if cfg.val_examples >= len(ds):
        fail(f"instruct.val_examples: {cfg.val_examples} >= {len(ds)} examples in {DATA_DIR}")

    call.relaunch_if_parallel()

    def make_data(seed: int) -> StageData:
        from flanmoe.train.data import TokenBudgetBatches, eval_batches, split_validation
        from flanmoe.train.mixture import mixture_indices

        train_ds, val_ds = split_validation(ds, cfg.val_examples, seed)
        rows, tasks = mixture_indices(train_ds["task_name"], cfg.mixture, seed)
        mixed = train_ds.select(rows)
        shares = template_shares(mixed["template_type"])
        replayed = 0
        if cfg.mixture.replay > 0:
            mixed, replayed = with_replay(mixed, cfg.mixture.replay, seed)
        sampler = TokenBudgetBatches(mixed, cfg.max_tokens, seed)
        if sampler.groups_per_epoch() < cfg.groups:
            fail(f"instruct.max_tokens: {cfg.max_tokens} gives fewer micro-batches than nproc x grad_accum")
        lengths = [
            (len(x), len(y)) for x, y in zip(mixed["input_ids"][:2000], mixed["labels"][:2000], strict=True)
        ]
        return StageData(
            sampler=sampler,
            val_batches=eval_batches(val_ds, max_tokens=cfg.max_tokens),
            enc_len=max(1, round(sum(a for a, _ in lengths) / len(lengths))),
            dec_len=max(1, round(sum(b for _, b in lengths) / len(lengths))),
            metrics={
                "mixture": {
                    "tasks": len(tasks),
                    "rows": len(rows),
                    **shares,
                    **({"replay_rows": replayed} if cfg.mixture.replay > 0 else {}),
                    "max_rate": max(t["rate"] for t in tasks.values()),
                    "min_rate": min(t["rate"] for t in tasks.values()),
                }
            },
        )

    data_hash = dvc_md5(DATA_DIR) + dvc_md5(Path(init_dir))
    run_training(
        "instruct", arch, params, data_hash, make_data, init_dir=init_dir, inputs={DATA_DIR: "training"}
    )


if __name__ == "__main__":
    run_stage(main)
