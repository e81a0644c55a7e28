"""Stage `pretrain`: span-corruption pretraining of one arch -> models/pretrain/s<seed>/<arch>/.

    python -m stages.pretrain <arch> [--seed N]   # dvc.yaml: matrix archs.run x base.seeds;
                                                  # pretrain_extra: base.extra_archs x base.extra_seeds

Reads data/tokenized/pretrain (a seeded held-out slice of it is the validation set), trains from a
seeded init (or, with `archs.variants.<arch>.init: hf:<dir or hub id>`, from that Hugging Face T5 /
Switch checkpoint, whose tokenizer the pipeline must use; `pretrain.steps: 0` then only imports and
exports) with the `pretrain` params, resumes automatically from checkpoints/pretrain/s<seed>/<arch>/,
then exports the model directory, metrics/pretrain/s<seed>/<arch>.json and the loss curve
plots/pretrain/s<seed>/<arch>.json
(`stages/training.py`). With `pretrain.parallel.nproc > 1` it re-launches itself under torchrun.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import dvc_md5, fail, require, run_stage
from stages.paths import TOKENIZED, TOKENIZER
from stages.training import StageData, parse_call, run_training

DATA_DIR = TOKENIZED / "pretrain"
HF_VOCAB_PADDING = 128  # HF pads T5's vocabulary to a multiple of 128 (32100 tokens -> 32128 rows)


def resolve_hf_init(arch: str, params) -> Path | None:
    """The checkpoint directory of ``archs.variants.<arch>.init: hf:...`` (None for scratch); exit 2
    naming the key when it is missing, not importable, or not the kind (MoE or dense) of the arch."""
    spec = params.archs.variants[arch]
    if spec.hf_init is None:
        return None
    from flanmoe.model.hf import SAFETENSORS_FILE, config_from_hf, read_hf_config, resolve_hf_path

    key = f"archs.variants.{arch}.init ({spec.init})"
    try:
        path = resolve_hf_path(spec.hf_init)
        cfg = config_from_hf(read_hf_config(path))
    except (OSError, ValueError) as e:
        fail(f"{key}: {e}")
    if not any(path.glob(f"{SAFETENSORS_FILE}*")) and not any(path.glob("pytorch_model.bin*")):
        fail(f"{key}: {path} has no model.safetensors or pytorch_model.bin")
    from flanmoe.model.pretrained import check_safetensors

    for file in sorted(path.glob("*.safetensors")):  # the file or its shards: whole, before any work
        try:
            check_safetensors(file)
        except ValueError as e:
            fail(f"{key}: {e}; download the checkpoint again")
    moe = params.arch_config(arch).moe is not None
    if (cfg.moe is not None) != moe:
        kind = "a Switch (MoE)" if cfg.moe is not None else "a dense T5"
        fail(f"{key}: {path} is {kind} checkpoint but arch {arch!r} is {'MoE' if moe else 'dense'} in params")
    return path


def check_hf_tokenizer(arch: str, params, path: Path) -> None:
    """Exit 2 unless the pipeline's tokenizer (data/tokenized/tokenizer.json) is the checkpoint's: the
    same vocabulary as its tokenizer.json if it has one, else a size its embedding covers."""
    from tokenizers import Tokenizer

    from flanmoe.model.hf import read_hf_config

    key = f"archs.variants.{arch}.init ({params.archs.variants[arch].init})"
    ours = Tokenizer.from_file(str(TOKENIZER))
    n, rows = ours.get_vocab_size(), read_hf_config(path)["vocab_size"]
    fix = f"set tokenize.tokenizer_path to that checkpoint's tokenizer (now {params.tokenize.tokenizer_path})"
    if (path / "tokenizer.json").is_file():
        if Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab() != ours.get_vocab():
            fail(f"{key}: the pipeline's tokenizer ({TOKENIZER}) is not {path / 'tokenizer.json'}; {fix}")
    if not n <= rows < n + HF_VOCAB_PADDING:
        fail(
            f"{key}: the checkpoint's vocab_size {rows} does not fit the pipeline's tokenizer ({n} tokens, {TOKENIZER}); {fix}"
        )


def main(argv: list[str] | None = None) -> None:
    call = parse_call("pretrain", argv)
    params, arch, cfg = call.params, call.arch, call.cfg
    hf_dir = resolve_hf_init(arch, params)
    require(DATA_DIR, TOKENIZER, hint="run the tokenize stage first (dvc repro tokenize)")
    if hf_dir is not None:
        check_hf_tokenizer(arch, params, hf_dir)

    import datasets

    ds = datasets.load_from_disk(str(DATA_DIR))
    if cfg.val_examples >= len(ds):
        fail(f"pretrain.val_examples: {cfg.val_examples} >= {len(ds)} examples in {DATA_DIR}")
    if cfg.batch_size > len(ds) - cfg.val_examples:
        fail(f"pretrain.batch_size: {cfg.batch_size} > {len(ds) - cfg.val_examples} training examples")

    call.relaunch_if_parallel()

    def make_data(seed: int) -> StageData:
        from flanmoe.train.data import PackedBatches, eval_batches, split_validation

        train_ds, val_ds = split_validation(ds, cfg.val_examples, seed)
        return StageData(
            sampler=PackedBatches(train_ds, cfg.batch_size, seed),
            val_batches=eval_batches(val_ds, batch_size=max(cfg.batch_size // cfg.groups, 1)),
            enc_len=len(ds[0]["input_ids"]),
            dec_len=len(ds[0]["labels"]),
        )

    run_training(
        "pretrain", arch, params, dvc_md5(DATA_DIR), make_data, hf_dir=hf_dir, inputs={DATA_DIR: "training"}
    )


if __name__ == "__main__":
    run_stage(main)
