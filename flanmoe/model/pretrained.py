"""Exported model directory: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``).

``config.json`` is the ``ModelConfig`` as JSON with ``vocab_size`` set to the model's and
``"format": "flanmoe", "format_version": 1``. ``model.safetensors`` holds the plain state dict of a
``FlanMoEModel`` (contiguous CPU tensors; a tied model has one embedding, no ``lm_head``). A sharded
(FSDP/EP) model is saved by passing its state dict already gathered to full tensors (e.g.
``flanmoe.train.trainer.state_dict_for_export``, on every process; save on one).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from flanmoe.atomic import atomic_file
from flanmoe.model.config import ModelConfig, MoEConfig
from flanmoe.model.transformer import FlanMoEModel
from flanmoe.params_base import format_validation_error

FORMAT, FORMAT_VERSION = "flanmoe", 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
# What torch.compile, DDP, activation checkpointing and FSDP1 wrappers put into parameter names.
WRAPPER_SEGMENTS = frozenset({"_orig_mod", "module", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"})


def unwrapped_key(key: str) -> str:
    """``key`` as a bare ``FlanMoEModel`` names it: the wrappers' segments (``WRAPPER_SEGMENTS``) removed."""
    return ".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)


def save_pretrained(
    model: FlanMoEModel | torch.nn.Module,
    path: str | Path,
    tokenizer_path: str | Path | None = None,
    state_dict: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write ``model`` (config, weights, optionally ``tokenizer.json``) to directory ``path``.

    ``model`` may be wrapped (``torch.compile``); ``state_dict`` (full tensors, e.g. gathered from a
    distributed model) replaces ``model.state_dict()``. ``tokenizer_path`` is a ``tokenizer.json``
    or a directory holding one. Keys and shapes are checked against the config before writing.
    """
    from safetensors.torch import save_file  # imported here: only export needs it

    base = getattr(model, "_orig_mod", model)
    cfg, vocab = base.cfg, base.vocab_size
    tensors = _clean_state_dict(state_dict if state_dict is not None else base.state_dict())
    _check_keys(tensors, cfg, vocab, "state_dict")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_path is not None:
        src = Path(tokenizer_path)
        src = src / TOKENIZER_FILE if src.is_dir() else src
        if not src.is_file():
            raise FileNotFoundError(f"tokenizer_path: {src} does not exist")
        shutil.copyfile(src, out / TOKENIZER_FILE)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **cfg.model_dump(mode="json")}
    config["vocab_size"] = vocab
    with atomic_file(out / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    with atomic_file(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return out


def load_config(path: str | Path) -> ModelConfig:
    """The ``ModelConfig`` (``vocab_size`` set) of an exported directory ``path``."""
    file = _model_dir(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (not an exported flanmoe model directory?)")
    try:
        data: Any = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{file}: format {got!r}, expected {FORMAT!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    fields = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        cfg = ModelConfig.model_validate(fields)
    except ValidationError as err:
        raise ValueError(
            f"{file}: invalid model config: " + "; ".join(format_validation_error(err))
        ) from None
    if cfg.vocab_size is None:
        raise ValueError(f"{file}: vocab_size: missing")
    return cfg


def load_pretrained(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    moe_overrides: Mapping[str, Any] | None = None,
) -> FlanMoEModel:
    """The ``FlanMoEModel`` saved in ``path``, weights exactly as stored (then moved to
    ``device``/``dtype``).

    ``moe_overrides`` replace ``MoEConfig`` fields that hold no weights (``dropless``, capacity
    factors, ...; ignored for a dense model). Returned in training mode, like a freshly built model:
    call ``.eval()`` for inference.
    """
    from safetensors.torch import load_file

    cfg = load_config(path)
    if moe_overrides and cfg.moe is not None:
        moe = MoEConfig.model_validate({**cfg.moe.model_dump(), **moe_overrides})
        cfg = cfg.model_copy(update={"moe": moe})
    file = check_weights(path)  # a truncated file: ValueError naming it, not safetensors' own error
    tensors = load_file(str(file), device="cpu")
    _check_keys(tensors, cfg, cfg.vocab_size, str(file))
    with torch.device("meta"):  # no random init: the loaded tensors become the parameters
        model = FlanMoEModel(cfg, cfg.vocab_size)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def check_weights(path: str | Path) -> Path:
    """``model.safetensors`` of the exported directory ``path``, checked whole without loading it (its
    header parses and its tensors cover the file exactly: a truncated or overwritten file fails).
    Raises FileNotFoundError when it is missing, ValueError naming the file when it is unreadable."""
    file = _model_dir(path) / WEIGHTS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing")
    check_safetensors(file)
    return file


def check_safetensors(file: str | Path) -> None:
    """Raise ValueError naming ``file`` unless it is a whole safetensors file (any, e.g. an HF shard)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="numpy"):  # memory-maps and validates the header only
            pass
    except Exception as err:  # noqa: BLE001 - SafetensorError is not importable by a stable name
        raise ValueError(f"{file}: truncated or corrupt, not a readable safetensors file ({err})") from None


def _model_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such model directory")
    return p


def _clean_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Plain contiguous CPU tensors keyed like a bare ``FlanMoEModel`` (wrapper prefixes removed)."""
    out = {}
    for key, t in sd.items():
        if type(t).__name__ == "DTensor":  # a collective is the caller's job (every rank must join)
            raise ValueError(f"state_dict: {key} is a DTensor; gather it to a full tensor first")
        out[unwrapped_key(key)] = t.detach().to("cpu").contiguous()
    return out


def _check_keys(tensors: Mapping[str, Tensor], cfg: ModelConfig, vocab: int, where: str) -> None:
    """Strict check of names and shapes against the model of ``cfg`` (built on the meta device)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in FlanMoEModel(cfg, vocab).state_dict().items()}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{where}: keys do not match the config: missing {missing}, unexpected {unexpected}")
    wrong = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(s)}" for k, s in expected.items() if tensors[k].shape != s
    ]
    if wrong:
        raise ValueError(f"{where}: shapes do not match the config: " + "; ".join(wrong))
