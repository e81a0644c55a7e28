"""The tokenize stage's (inputs, targets) pairs: instruction tuning and fine-tuning sets.

``tokenize_pairs`` encodes ``inputs``/``targets`` into ``input_ids``/``labels``, each truncated and
eos-terminated, in the config's answer form (``flanmoe.data.answer_slot``: truncation leaves room for
the slot), with stats of what truncation cut.
"""

from __future__ import annotations

import time
from pathlib import Path

import datasets
import pyarrow.compute as pc
from tokenizers import Tokenizer

from flanmoe.data.answer_slot import AnswerSlot
from flanmoe.data.config import TokenizeConfig
from flanmoe.data.encoding import cfg_key, column_sums, encode, fingerprint
from flanmoe.data.tokenizer import EOS_ID


def _truncate(ids: list[list[int]], max_len: int) -> tuple[list[list[int]], list[bool], list[int]]:
    """Cut each sequence to ``max_len`` keeping its final eos; also return truncated flags and raw lengths."""
    lengths = [len(x) for x in ids]
    cut = [x if len(x) <= max_len else x[: max_len - 1] + [EOS_ID] for x in ids]
    return cut, [n > max_len for n in lengths], lengths


def _encode_pairs(
    batch: dict, tok: Tokenizer, max_input_length: int, max_target_length: int, slot: AnswerSlot
) -> dict:
    inputs, in_cut, in_len = _truncate(encode(tok, batch["inputs"]), max_input_length - slot.input_extra)
    targets = [slot.target_text(t) for t in batch["targets"]]
    labels, tg_cut, tg_len = _truncate(encode(tok, targets), max_target_length - slot.target_extra)
    inputs, labels = [slot.inputs(x) for x in inputs], [slot.target(y) for y in labels]
    return {
        "input_ids": inputs,
        "labels": labels,
        "_input_truncated": in_cut,
        "_target_truncated": tg_cut,
        "_raw_input_tokens": in_len,
        "_raw_target_tokens": tg_len,
    }


def tokenize_pairs(
    ds: datasets.Dataset, tok: Tokenizer, cfg: TokenizeConfig, work_file: Path, keep_text: bool
) -> tuple[datasets.Dataset, dict]:
    """Encode ``inputs``/``targets`` into ``input_ids``/``labels`` (truncated, eos-terminated).

    Keeps the other columns; drops ``inputs``/``targets`` unless ``keep_text``. Returns the dataset
    and its stats (examples, tokens after truncation, truncation rates, tokens lost to truncation).
    """
    t0 = time.perf_counter()
    work_file.parent.mkdir(parents=True, exist_ok=True)
    feats = dict(ds.features)
    if not keep_text:
        feats.pop("inputs"), feats.pop("targets")
    ids = datasets.Sequence(datasets.Value("int32"))
    feats.update(input_ids=ids, labels=ids)
    key = cfg_key(cfg, without_answer=cfg.answer_form == "plain")  # the pretraining data never has it
    flags = ["_input_truncated", "_target_truncated", "_raw_input_tokens", "_raw_target_tokens"]
    if len(ds) == 0:  # map would not add the new columns to an empty dataset
        out = datasets.Dataset.from_dict({k: [] for k in feats}, features=datasets.Features(feats))
        keys = ["examples", "input_tokens", "target_tokens", "tokens", "truncated_tokens"]
        rates = ["input_truncation_rate", "target_truncation_rate", "truncation_rate", "seconds"]
        return out, {**dict.fromkeys(keys, 0), **dict.fromkeys(rates, 0.0)}
    feats.update({f: datasets.Value("bool") for f in flags[:2]})
    feats.update({f: datasets.Value("int64") for f in flags[2:]})
    out = ds.map(
        _encode_pairs,
        batched=True,
        batch_size=cfg.batch_size,
        num_proc=cfg.num_proc if cfg.num_proc > 1 and len(ds) > cfg.batch_size else None,
        remove_columns=[] if keep_text else ["inputs", "targets"],
        fn_kwargs={
            "tok": tok,
            "max_input_length": cfg.max_input_length,
            "max_target_length": cfg.max_target_length,
            "slot": AnswerSlot.of(cfg.answer_form, tok),
        },
        features=datasets.Features(feats),
        cache_file_name=str(work_file),
        load_from_cache_file=False,
        new_fingerprint=fingerprint(tok.to_str(), key, ds._fingerprint, str(keep_text)),
        desc=f"encode {work_file.stem}",
    )
    col = column_sums(out, flags)
    either = pc.or_(out.data.table.column(flags[0]), out.data.table.column(flags[1]))  # 1 bit a row
    n = len(out)
    in_tok = int(sum(len(c.flatten()) for c in out.data.table.column("input_ids").chunks))
    tg_tok = int(sum(len(c.flatten()) for c in out.data.table.column("labels").chunks))
    stats = {
        "examples": n,
        "input_tokens": in_tok,
        "target_tokens": tg_tok,
        "tokens": in_tok + tg_tok,
        "input_truncation_rate": col["_input_truncated"] / n,
        "target_truncation_rate": col["_target_truncated"] / n,
        # examples with inputs or targets cut, and the tokens cut away
        "truncation_rate": int(pc.sum(either).as_py() or 0) / n,
        "truncated_tokens": col["_raw_input_tokens"] + col["_raw_target_tokens"] - in_tok - tg_tok,
        "seconds": time.perf_counter() - t0,
    }
    out = out.remove_columns(flags)
    return out, stats
