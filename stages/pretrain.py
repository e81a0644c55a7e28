"""Stage `pretrain`: span-corruption pretraining of one arch -> models/pretrain/s<seed>/<arch>/.

    python -m stages.pretrain <arch> [--seed N]   # dvc.yaml: matrix archs.run x base.seeds

Reads data/tokenized/pretrain (a seeded held-out slice of it is the validation set), trains from a
seeded init with the `pretrain` params, resumes automatically from checkpoints/pretrain/s<seed>/<arch>/,
then exports the model directory, metrics/pretrain/s<seed>/<arch>.json and the loss curve
plots/pretrain/s<seed>/<arch>.json
(`stages/training.py`). With `pretrain.parallel.nproc > 1` it re-launches itself under torchrun.
"""

from __future__ import annotations

import sys

from stages.common import dvc_md5, fail, load_params, replicate
from stages.training import TOKENIZED, TOKENIZER, StageData, parse_arch, require, run_training

DATA_DIR = TOKENIZED / "pretrain"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    params, args = replicate(load_params(), argv)
    arch = parse_arch("pretrain", args, params)
    cfg = params.pretrain
    require(DATA_DIR, TOKENIZER, hint="run the tokenize stage first (dvc repro tokenize)")

    import datasets

    ds = datasets.load_from_disk(str(DATA_DIR))
    if cfg.val_examples >= len(ds):
        fail(f"pretrain.val_examples: {cfg.val_examples} >= {len(ds)} examples in {DATA_DIR}")
    if cfg.batch_size > len(ds) - cfg.val_examples:
        fail(f"pretrain.batch_size: {cfg.batch_size} > {len(ds) - cfg.val_examples} training examples")

    from flanmoe.train.launch import relaunch_under_torchrun, under_torchrun

    if cfg.parallel.nproc > 1 and not under_torchrun():  # checked above, so no process fails alone
        relaunch_under_torchrun(cfg.parallel.nproc, "stages.pretrain", argv)

    def make_data(seed: int) -> StageData:
        from flanmoe.train.data import PackedBatches, eval_batches, split_validation

        train_ds, val_ds = split_validation(ds, cfg.val_examples, seed)
        return StageData(
            sampler=PackedBatches(train_ds, cfg.batch_size, seed),
            val_batches=eval_batches(val_ds, batch_size=max(cfg.batch_size // cfg.groups, 1)),
            enc_len=len(ds[0]["input_ids"]),
            dec_len=len(ds[0]["labels"]),
        )

    run_training("pretrain", arch, params, dvc_md5(DATA_DIR), make_data, inputs={DATA_DIR: "training"})


if __name__ == "__main__":
    main()
