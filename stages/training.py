"""What the training stages (pretrain, instruct, finetune) share: the command line and its checks
(``parse_call``), resumable checkpoints with a fingerprint, the MLflow run, training through ``flanmoe.train``, and the exported outputs:

- ``models/<stage>/s<seed>/<arch>/`` (config.json, model.safetensors, tokenizer.json): the DVC out;
- ``metrics/<stage>/s<seed>/<arch>.json`` (no timings: same params, same file) and
  ``plots/<stage>/s<seed>/<arch>.json``;
- ``checkpoints/<stage>/s<seed>/<arch>/`` (DCP; outside DVC's outs, so a crashed or killed run loses at
  most ``checkpoint_every`` steps and a rerun resumes).

``s<seed>``: the replicate of ``base.seeds`` (``--seed``; ``stages.common.for_seed``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flanmoe.atomic import atomic_dir, write_json
from flanmoe.config import Params
from stages.common import (
    arch_tags,
    dvc_md5,
    effective_seed,
    fail,
    for_seed,
    load_params,
    require_device,
    stage_deps,
    tracked_run,
)
from stages.paths import CHECKPOINTS, METRICS, MODELS, PLOTS, TOKENIZER, seed_dir

EXTRA_STAGES = ("pretrain", "instruct")  # the training stages base.extra_seeds also runs (dvc.yaml *_extra)
# settings that change neither the math nor the data order: a checkpoint stays valid across them
_LAYOUT_KEYS = {"parallel", "grad_accum", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"}


@dataclass(frozen=True)
class TrainingCall:
    """A training stage's command line, parsed and checked (``parse_call``)."""

    stage: str  # pretrain | instruct | finetune: also the params section it trains with
    params: Params  # as the replicate of ``--seed`` sees them
    arch: str  # a key of archs.variants
    args: argparse.Namespace  # the stage's other arguments
    argv: list[str]  # as given: a relaunch under torchrun passes them on

    @property
    def cfg(self):
        return getattr(self.params, self.stage)

    def relaunch_if_parallel(self) -> None:
        """Re-run this command under torchrun when ``<stage>.parallel.nproc > 1``. Call it after every
        check that can fail, so that no process fails alone."""
        from flanmoe.train.launch import relaunch_under_torchrun, under_torchrun

        if self.cfg.parallel.nproc > 1 and not under_torchrun():
            relaunch_under_torchrun(self.cfg.parallel.nproc, f"stages.{self.stage}", self.argv)


def parse_call(
    stage: str, argv: list[str] | None, positionals: tuple[str, ...] = (), freeze: bool = False
) -> TrainingCall:
    """The prelude of every training stage: validate params.yaml (exit 2 naming the key), then parse
    ``python -m stages.<stage> <arch> [POSITIONALS...] [--seed N] [--freeze OPTION]`` (exit 2 with
    the usage line) and check the arch and the seed against params, and the device against the
    machine (``cuda`` without a GPU)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    params = load_params()
    names = " ".join(f"<{p}>" for p in ("arch", *positionals))
    usage = f"%(prog)s {names} [--seed N]" + (" [--freeze OPTION]" if freeze else "")
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", usage=usage)
    for name in ("arch", *positionals):
        parser.add_argument(name)
    parser.add_argument("--seed", help="the replicate of base.seeds (may be left out with one seed)")
    if freeze:
        parser.add_argument("--freeze", help="the freeze ablation's option (default: finetune.freeze)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage line and the error
        raise SystemExit(2 if e.code else 0) from None
    if args.seed is not None and not args.seed.isdigit():
        fail(f"--seed: expected a seed of base.seeds {params.base.seeds}, got {args.seed!r}")
    seed = None if args.seed is None else int(args.seed)
    params = for_seed(params, seed, args.arch, extra=stage in EXTRA_STAGES)
    if args.arch not in params.archs.variants:
        fail(f"arch: unknown arch {args.arch!r}; archs.variants defines {sorted(params.archs.variants)}")
    require_device(f"{stage}.parallel.device", getattr(params, stage).parallel.device)
    return TrainingCall(stage, params, args.arch, args, argv)


def checkpoint_fingerprint(stage: str, arch: str, params, data_hash: str, model_cfg=None) -> str:
    """What a checkpoint must match to be resumed: the arch's model (``model_cfg``, default the params'
    config of ``arch``) and init, the math of the trainer, the seed, the data and the stage's code (DVC
    reruns a stage whose code changed: it must not resume the old run), not the process layout (a
    checkpoint resumes at another world size)."""
    cfg = getattr(params, stage)
    code = {
        d: dvc_md5(Path(d)) for d in stage_deps(f"{stage}@{arch}") if d.startswith(("flanmoe/", "stages/"))
    }
    init = params.archs.variants[arch].init
    blob = {
        **({"init": init} if init != "scratch" else {}),
        "model": (model_cfg or params.arch_config(arch)).model_dump(mode="json"),
        "train": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _LAYOUT_KEYS},
        "seed": params.base.seed,
        "data": data_hash,
        "code": code,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def prepare_checkpoint_dir(stage: str, root: Path, fingerprint: str, is_main: bool) -> None:
    """Keep ``root``'s checkpoints only if they were made with the same fingerprint."""
    stamp = root / "FINGERPRINT"
    if not is_main:
        return
    if root.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        print(f"{stage}: {root} holds checkpoints of other params, data or code; starting fresh", flush=True)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")


@dataclass
class StageData:
    """What a training stage feeds the trainer (built after the process layout is known)."""

    sampler: Any  # PackedBatches / TokenBudgetBatches
    val_batches: list
    enc_len: int  # typical lengths, for FLOPs per token
    dec_len: int
    metrics: dict[str, Any] = field(default_factory=dict)  # data figures for the metrics file


def run_training(
    stage: str,
    arch: str,
    params,
    data_hash: str,
    make_data: Callable[[int], StageData],
    init_dir: Path | None = None,
    hf_dir: Path | None = None,
    variant: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    freeze: str = "none",
    tags: dict[str, Any] | None = None,
    inputs: dict[Path, str] | None = None,
) -> None:
    """Train ``arch`` with ``params.<stage>`` (already validated, already under torchrun if needed):
    from a fresh init (seeded), the exported model in ``init_dir``, or the HF checkpoint in ``hf_dir``
    (``archs.variants.<arch>.init: hf:...``, checked by the caller); export, metrics, plot, MLflow
    (the model as a logged model of the run, ``inputs``: the data directories read, path -> context).
    An arch imported from HF takes its model config from the checkpoint (pretrain) or from
    ``init_dir`` (later stages), not from params ``model`` / ``archs``.

    ``variant`` names the outputs (default ``arch``); ``model_overrides`` are ModelConfig fields
    (``moe``: a dict merged into it) this stage changes (dropout, expert dropout); ``freeze`` an option
    of ``flanmoe.train.freeze``. With early stopping the best model is exported, not the last."""
    import torch
    from tokenizers import Tokenizer

    from flanmoe.config import flatten
    from flanmoe.model import accounting, build_model
    from flanmoe.model.hf import load_hf
    from flanmoe.model.pretrained import load_config, load_pretrained, save_pretrained
    from flanmoe.parallel import Checkpointer
    from flanmoe.train.freeze import apply_freeze
    from flanmoe.train.launch import prepare_model, setup_distributed
    from flanmoe.train.trainer import Trainer, state_dict_for_export

    cfg = getattr(params, stage)
    init = params.archs.variants[arch].init
    imported = load_hf(hf_dir) if hf_dir is not None else None
    if imported is not None:  # the checkpoint's config and vocabulary (HF pads it: 32128 for 32100)
        base_cfg, vocab = imported.cfg, imported.vocab_size
    elif init != "scratch" and init_dir is not None:  # a later stage of an arch imported from HF
        base_cfg = load_config(init_dir)
        vocab = base_cfg.vocab_size
    else:
        base_cfg = params.arch_config(arch)
        vocab = Tokenizer.from_file(str(TOKENIZER)).get_vocab_size()
    model_cfg = _with_overrides(base_cfg, model_overrides or {})
    variant = variant or arch
    seed = effective_seed(params, stage)
    dist = setup_distributed(cfg.parallel)
    data = make_data(seed)
    acct = accounting(model_cfg, vocab, data.enc_len, data.dec_len)
    torch.manual_seed(seed)  # the same initial model (and dropout streams) on every process
    if imported is not None and imported.cfg == model_cfg:
        model = imported  # no second copy of a large checkpoint
    else:
        model = build_model(model_cfg, vocab)
        if imported is not None:
            model.load_state_dict(imported.state_dict())
    if init_dir is not None:  # this stage's config (dropout, capacity, ...) with the earlier weights
        try:
            model.load_state_dict(load_pretrained(init_dir).state_dict())
        except (RuntimeError, ValueError) as e:
            fail(f"{init_dir}: does not fit arch {arch!r} of params.yaml (rerun the stage that made it): {e}")
    frozen = apply_freeze(model, freeze)  # before sharding: FSDP and the optimizer see requires_grad
    model = prepare_model(model, cfg, dist)

    rep = seed_dir(params.base.seed)
    ckpt_root = CHECKPOINTS / stage / rep / variant
    fingerprint = checkpoint_fingerprint(stage, arch, params, data_hash + variant, base_cfg)
    prepare_checkpoint_dir(stage, ckpt_root, fingerprint, dist.is_main)
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
    run_tags = {
        **arch_tags(arch, model_cfg),
        "init": init,  # hf:<checkpoint>: the model config comes from it, not from params model/archs
        "freeze": freeze,
        "world_size": dist.world_size,
        "ep": cfg.parallel.ep if model_cfg.moe is not None else 1,
        "device": dist.device.type,
        **(tags or {}),
    }
    sections = ["base", "model", stage]
    name = f"{stage}@{variant}"
    metrics_file, plot = METRICS / stage / rep / f"{variant}.json", PLOTS / stage / rep / f"{variant}.json"
    run_ctx = (
        tracked_run(name, params, sections, run_tags, inputs=inputs, outputs=[metrics_file, plot])
        if dist.is_main
        else contextlib.nullcontext()
    )
    best_dir = ckpt_root / "best"
    with run_ctx as run:
        if run is not None:
            run.log_params({f"arch.{k}": v for k, v in _flat_arch(model_cfg).items()})
        trainer = Trainer(
            model,
            cfg,
            data.sampler,
            data.val_batches,
            dist=dist,
            checkpointer=Checkpointer(ckpt_root, cfg.keep_checkpoints),
            log_fn=run.log_metrics if run is not None else None,
            flops_per_token=acct.train_flops_per_token,
            progress_desc=name,
            keep_best=lambda state: _save_exported(model, best_dir, state),
        )
        result = trainer.fit()
        state = state_dict_for_export(model)  # collective: every process takes part
        if not dist.is_main:
            _finish(dist)
            return
        out_dir = MODELS / stage / rep / variant
        with atomic_dir(out_dir) as tmp:
            if cfg.early_stopping_patience is not None and best_dir.is_dir():  # the best, not the last
                for f in best_dir.iterdir():
                    shutil.copy2(f, tmp / f.name)
            else:
                save_pretrained(model, tmp, tokenizer_path=TOKENIZER, state_dict=state)
        metrics = {
            "arch": arch,
            "init": init,
            "steps": result.steps,
            "best_step": result.best_step,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "train_loss": None if result.steps == 0 else result.train_loss,  # 0 steps: import and export
            "val_loss": result.val_loss,
            "tokens_seen": result.tokens_seen,
            "pad_fraction": result.pad_fraction,
            "params": acct.params,
            "active_params": acct.active_params,
            "trainable_params": frozen["trainable"],
            "flops_per_token": acct.forward_flops_per_token,
            "train_flops_per_token": acct.train_flops_per_token,
            "router": {k: v for k, v in result.router.items() if k.startswith("moe/")},
            "expert_load": {k: v for k, v in result.router.items() if "/expert_fraction/" in k},
            **data.metrics,
        }
        write_json(metrics_file, metrics)
        write_json(plot, result.curve)  # type: ignore[arg-type]
        model_id = run.log_model(
            out_dir, f"{stage}-{variant}", params=flatten(model_cfg), tags={"model_md5": dvc_md5(out_dir)}
        )
        final = {"final/train_loss": result.train_loss, "final/val_loss": result.val_loss or float("nan")}
        run.log_metrics({**final, "params": acct.params, "active_params": acct.active_params,
                         "flops_per_token": acct.forward_flops_per_token}, model_id=model_id)  # fmt: skip
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    if result.best_step is not None:
        val += f" (best {result.best_val_loss:.4f} at step {result.best_step}: exported)"
    print(f"{name}: {result.steps} steps{resumed}, train loss {result.train_loss:.4f}, val loss {val}")
    _finish(dist)


def _finish(dist) -> None:
    """Every process waits for the main one's outputs, then leaves the process group cleanly (a
    process that exits with gloo threads still running aborts: 'terminate called without an active
    exception')."""
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()


def _with_overrides(model_cfg, overrides: dict[str, Any]):
    """``model_cfg`` with a stage's changes (``moe`` merged field by field; ignored for dense)."""
    if not overrides:
        return model_cfg
    data = model_cfg.model_dump()
    moe = overrides.get("moe") or {}
    data.update({k: v for k, v in overrides.items() if k != "moe"})
    if data["moe"] is not None:
        data["moe"] = {**data["moe"], **moe}
    return type(model_cfg).model_validate(data)


def _save_exported(model, path: Path, state) -> None:
    """An exported model directory (atomic): the best model so far, kept beside the checkpoints."""
    from flanmoe.model.pretrained import save_pretrained

    with atomic_dir(path) as tmp:
        save_pretrained(model, tmp, tokenizer_path=TOKENIZER, state_dict=state)


def _flat_arch(model_cfg) -> dict[str, object]:
    from flanmoe.config import flatten

    return {k: v for k, v in flatten(model_cfg).items() if k.startswith("moe.") or k == "d_ff"}
