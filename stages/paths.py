"""The pipeline's file layout: where every stage reads and writes (dvc.yaml declares the same paths).

Replicate ``seed`` of ``base.seeds`` (or of ``base.extra_seeds``) writes under ``s<seed>/`` of each stage's folder
(``models/pretrain/s1234/dense``); the ``flanmoe`` library knows none of this.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"  # local source files (prepare's `kind: local`)
PREPARED = DATA / "prepared"
TOKENIZED = DATA / "tokenized"
TOKENIZER = TOKENIZED / "tokenizer.json"
MODELS = Path("models")  # models/<stage>/s<seed>/<variant>: exported model folders (DVC outs)
CHECKPOINTS = Path("checkpoints")  # checkpoints/<stage>/s<seed>/<variant>: resumable, outside DVC
METRICS = Path("metrics")  # metrics/<stage>/s<seed>/<variant>.json
PLOTS = Path("plots")  # plots/<stage>/s<seed>/<variant>.json: training curves
EVALS = Path("evals")  # evals/s<seed>/<name>: per-example predictions and routing of an evaluation


def seed_dir(seed: int) -> str:
    """The folder of replicate ``seed``'s outputs under each stage's root (``models/pretrain/s1234/dense``;
    in a stage: ``seed_dir(params.base.seed)``)."""
    return f"s{seed}"
