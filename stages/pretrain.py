"""Stage `pretrain`: span-corruption pretraining of one arch -> models/pretrain/<arch>/.

    python -m stages.pretrain <arch>        # dvc.yaml: foreach over archs.run

Reads data/tokenized/pretrain (a seeded held-out slice of it is the validation set), trains with the
`pretrain` params, resumes automatically from checkpoints/pretrain/<arch>/ (DCP; outside DVC's outs,
so a crashed or killed run loses at most `checkpoint_every` steps), then exports the model directory
(config.json, model.safetensors, tokenizer.json), metrics/pretrain/<arch>.json and the loss curve
plots/pretrain/<arch>.json. With `pretrain.parallel.nproc > 1` it re-launches itself under torchrun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from pathlib import Path

from stages.common import (
    DATA,
    METRICS,
    atomic_dir,
    dvc_md5,
    fail,
    load_params,
    stage_deps,
    tracked_run,
    write_json,
)

TOKENIZED = DATA / "tokenized"
MODELS = Path("models")
PLOTS = Path("plots")
CHECKPOINTS = Path("checkpoints")
# settings that change neither the math nor the data order: a checkpoint stays valid across them
_LAYOUT_KEYS = {"parallel", "grad_accum", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"}


def checkpoint_fingerprint(stage: str, arch: str, params, data_hash: str) -> str:
    """What a checkpoint must match to be resumed: the arch's model, the math of the trainer, the seed,
    the data and the stage's code (DVC reruns a stage whose code changed: it must not resume the old
    run), not the process layout (a checkpoint resumes at another world size)."""
    cfg = getattr(params, stage)
    code = {
        d: dvc_md5(Path(d)) for d in stage_deps(f"{stage}@{arch}") if d.startswith(("flanmoe/", "stages/"))
    }
    blob = {
        "model": params.arch_config(arch).model_dump(mode="json"),
        "train": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _LAYOUT_KEYS},
        "seed": params.base.seed,
        "data": data_hash,
        "code": code,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def prepare_checkpoint_dir(root: Path, fingerprint: str, is_main: bool) -> None:
    """Keep ``root``'s checkpoints only if they were made with the same fingerprint."""
    stamp = root / "FINGERPRINT"
    if not is_main:
        return
    if root.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        print(f"pretrain: {root} holds checkpoints of other params, data or code; starting fresh", flush=True)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    params = load_params()
    if len(argv) != 1:
        fail("usage: python -m stages.pretrain <arch>")
    arch = argv[0]
    if arch not in params.archs.variants:
        fail(f"arch: unknown arch {arch!r}; archs.variants defines {sorted(params.archs.variants)}")
    cfg, model_cfg = params.pretrain, params.arch_config(arch)
    data_dir, tok_file = TOKENIZED / "pretrain", TOKENIZED / "tokenizer.json"
    for needed in (data_dir, tok_file):
        if not needed.exists():
            fail(f"{needed} not found: run the tokenize stage first (dvc repro tokenize)")

    import datasets

    ds = datasets.load_from_disk(str(data_dir))
    if cfg.val_examples >= len(ds):
        fail(f"pretrain.val_examples: {cfg.val_examples} >= {len(ds)} examples in {data_dir}")
    if cfg.batch_size > len(ds) - cfg.val_examples:
        fail(f"pretrain.batch_size: {cfg.batch_size} > {len(ds) - cfg.val_examples} training examples")

    from flanmoe.train.launch import relaunch_under_torchrun, under_torchrun

    if cfg.parallel.nproc > 1 and not under_torchrun():  # checked above, so no process fails alone
        relaunch_under_torchrun(cfg.parallel.nproc, "stages.pretrain", argv)

    import torch
    from tokenizers import Tokenizer

    from flanmoe.model import accounting, build_model
    from flanmoe.train.data import PackedBatches, eval_batches, split_validation

    seed = cfg.seed if cfg.seed is not None else params.base.seed

    from flanmoe.parallel import Checkpointer
    from flanmoe.train.launch import prepare_model, setup_distributed
    from flanmoe.train.trainer import Trainer, state_dict_for_export

    dist = setup_distributed(cfg.parallel)
    train_ds, val_ds = split_validation(ds, cfg.val_examples, seed)
    vocab = Tokenizer.from_file(str(tok_file)).get_vocab_size()
    enc_len, dec_len = len(ds[0]["input_ids"]), len(ds[0]["labels"])
    acct = accounting(model_cfg, vocab, enc_len, dec_len)
    torch.manual_seed(seed)  # the same initial model on every process
    model = prepare_model(build_model(model_cfg, vocab), cfg, dist)

    ckpt_root = CHECKPOINTS / "pretrain" / arch
    prepare_checkpoint_dir(
        ckpt_root, checkpoint_fingerprint("pretrain", arch, params, dvc_md5(data_dir)), dist.is_main
    )
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    moe = model_cfg.moe
    tags = {
        "arch": arch,
        "router": "dense" if moe is None else moe.router,
        "num_experts": 0 if moe is None else moe.num_experts,
        "world_size": dist.world_size,
        "ep": cfg.parallel.ep if moe is not None else 1,
        "device": dist.device.type,
    }
    sections = ["base", "model", "pretrain"]
    run_ctx = (
        tracked_run(f"pretrain@{arch}", params, sections, tags) if dist.is_main else contextlib.nullcontext()
    )
    with run_ctx as run:
        if run is not None:
            run.log_params({f"arch.{k}": v for k, v in _flat_arch(model_cfg).items()})
        trainer = Trainer(
            model,
            cfg,
            PackedBatches(train_ds, cfg.batch_size, seed),
            eval_batches(val_ds, batch_size=max(cfg.batch_size // cfg.groups, 1)),
            dist=dist,
            checkpointer=Checkpointer(ckpt_root, cfg.keep_checkpoints),
            log_fn=run.log_metrics if run is not None else None,
            flops_per_token=acct.train_flops_per_token,
            progress_desc=f"pretrain@{arch}",
        )
        result = trainer.fit()
        state = state_dict_for_export(model)  # collective: every process takes part
        if not dist.is_main:
            return
        from flanmoe.model.pretrained import save_pretrained

        with atomic_dir(MODELS / "pretrain" / arch) as tmp:
            save_pretrained(model, tmp, tokenizer_path=tok_file, state_dict=state)
        metrics = {
            "arch": arch,
            "steps": result.steps,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
            "tokens_seen": result.tokens_seen,
            "pad_fraction": result.pad_fraction,
            "params": acct.params,
            "active_params": acct.active_params,
            "flops_per_token": acct.forward_flops_per_token,
            "train_flops_per_token": acct.train_flops_per_token,
            "router": {k: v for k, v in result.router.items() if k.startswith("moe/")},
            "expert_load": {k: v for k, v in result.router.items() if "/expert_fraction/" in k},
        }
        write_json(METRICS / "pretrain" / f"{arch}.json", metrics)
        write_json(PLOTS / "pretrain" / f"{arch}.json", result.curve)  # type: ignore[arg-type]
        run.log_metrics(
            {"final/train_loss": result.train_loss, "final/val_loss": result.val_loss or float("nan")}
        )
        run.log_metrics({"params": acct.params, "active_params": acct.active_params,
                         "flops_per_token": acct.forward_flops_per_token})  # fmt: skip
        run.log_dict(metrics, "metrics.json")
        run.log_artifacts(MODELS / "pretrain" / arch, "model")
        run.log_artifact(PLOTS / "pretrain" / f"{arch}.json", "plots")
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    print(
        f"pretrain@{arch}: {result.steps} steps{resumed}, train loss {result.train_loss:.4f}, val loss {val}"
    )


def _flat_arch(model_cfg) -> dict[str, object]:
    from flanmoe.config import flatten

    return {k: v for k, v in flatten(model_cfg).items() if k.startswith("moe.") or k == "d_ff"}


if __name__ == "__main__":
    main()
