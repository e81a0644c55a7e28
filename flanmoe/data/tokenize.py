"""The tokenize stage's library: tokenizer, T5 span-corrupted packed pretraining data, (inputs, targets)
pairs for instruction tuning and fine-tuning (``flanmoe.data.pairs``), evaluation sets passed through.

Entry point: ``tokenize_prepared(prepared_dir, out_dir, cfg) -> stats``. Output layout (all written
with ``flanmoe.data.prepared.save``, byte-deterministic):

- ``tokenizer.json``
- ``pretrain``: Dataset, ``input_ids`` [input_length], ``labels`` [target_length], int32, padded with
  pad id 0 (mask pad in the loss). Documents are concatenated with eos between them into one token
  stream, cut into raw chunks of ``random_spans_helper`` length, each span-corrupted (T5; span k
  becomes ``<extra_id_k>`` at whatever id the tokenizer gives it: 3 + k for ours, 32099 - k for HF T5's).
  With ``salient_fraction`` > 0 (the corpus needs a ``salient_spans`` column), a chunk chosen with that
  probability masks its salient tokens instead (``flanmoe.data.salient``; tail cut to fit the inputs).
  ``packing: document``: every document starts a chunk and its last chunk is padded, so no chunk
  holds two documents; a row's padding is dropped from its inputs and targets after corruption.
- ``flan``: Dataset, ``input_ids``, ``labels`` (variable length, truncated, each ending with eos),
  ``task_source``, ``task_name``, ``template_type``; the raw text is dropped. ``answer_form:
  sentinel``: the pairs in ``flanmoe.data.answer_slot``'s form (truncation leaves room for it).
- ``finetune/<task>``: DatasetDict (train/validation/test), ``input_ids``, ``labels`` plus all the
  original columns (``inputs``, ``targets``, ``task_name``: the evaluation compares text).
- ``mmlu``, ``bbh``, ``probe`` (the knowledge probe, embedded corpus only): DatasetDicts copied with all
  their columns (prompts are rendered at evaluation).

Atomicity: everything is written to ``<out_dir.parent>/.<out_dir.name>.tmp-<pid>`` and renamed onto
``out_dir`` at the end (a previous ``out_dir`` is replaced); on error the temp dir is removed.

Text is encoded with ``encode_special_tokens=True``: a literal ``<extra_id_0>`` or ``</s>`` in the
data is tokenized as text, so corpus text can never inject sentinels or eos.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer

from flanmoe.atomic import atomic_dir
from flanmoe.data import prepared
from flanmoe.data.config import TokenizeConfig  # noqa: F401 (re-exported: params live there)
from flanmoe.data.encoding import cfg_key, column_sums, encode, fingerprint
from flanmoe.data.packing import drop_pad, write_stream
from flanmoe.data.pairs import tokenize_pairs
from flanmoe.data.salient import check_salient, encode_salient, salient_corrupt, salient_noise_mask
from flanmoe.data.span_corruption import (
    corrupted_lengths,
    random_spans_noise_mask,
    span_corrupt_batch,
)
from flanmoe.data.tokenizer import EOS_ID, PAD_ID, load_tokenizer, sentinel_ids, train_tokenizer

BLOCK = 64  # raw chunks per random block: the unit seeded by (seed, block index)
NO_PROBE = "NO_PROBE"  # the file data/tokenized/probe holds when the corpus has no probe


def _first_chars(ds: datasets.Dataset, budget: int) -> tuple[list[str], int]:
    """The first documents of ``ds["text"]`` up to ``budget`` characters, and their total size."""
    texts: list[str] = []
    size = 0
    for batch in ds.select_columns(["text"]).iter(batch_size=1000):
        for text in batch["text"]:
            if size >= budget:
                return texts, size
            texts.append(text)
            size += len(text)
    return texts, size


def get_tokenizer(prepared_dir: Path, cfg: TokenizeConfig) -> tuple[Tokenizer, dict]:
    """Load ``cfg.tokenizer_path`` or train one on up to ``tokenizer_train_mb`` of pretraining text."""
    t0 = time.perf_counter()
    if cfg.tokenizer_path is not None:
        tok = load_tokenizer(cfg.tokenizer_path, cfg.num_sentinels)
        source, train_chars = str(cfg.tokenizer_path), 0
    else:
        ds = datasets.load_from_disk(str(Path(prepared_dir) / "pretrain"))
        budget = int(cfg.tokenizer_train_mb * 1_000_000)
        texts, train_chars = _first_chars(ds, budget)
        tok = train_tokenizer(texts, cfg.vocab_size, cfg.kind, cfg.num_sentinels, length=len(texts))
        source = "trained"
    tok.encode_special_tokens = True
    return tok, {
        "source": source,
        "kind": cfg.kind if cfg.tokenizer_path is None else "loaded",
        "vocab_size": tok.get_vocab_size(),
        "train_chars": train_chars,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------- pretraining: stream, chunk, corrupt


def _encode_docs(batch: dict, tok: Tokenizer) -> dict:
    ids = encode(tok, batch["text"])
    offsets = np.cumsum([len(x) for x in ids])
    values = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(offsets[-1]) if len(ids) else 0)
    # a list of numpy arrays becomes an Arrow list column in one copy (no per-int Python objects)
    return {"ids": np.split(values, offsets[:-1])}


def _pad_row(x: np.ndarray, length: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, length - x.shape[1])), constant_values=PAD_ID)


def _corrupt_blocks(
    batch: dict, stream_path: str, salient_path: str | None, cfg_json: str, sentinels: list[int]
) -> dict:
    cfg = TokenizeConfig.model_validate_json(cfg_json)
    raw, _ = cfg.raw_and_target_lengths()
    stream = np.load(stream_path, mmap_mode="r")
    salient = np.load(salient_path, mmap_mode="r") if salient_path else None
    n_chunks = len(stream) // raw
    inputs, labels, extra = [], [], {"_salient": [], "_salient_tokens": [], "_tail_dropped": []}
    for block in batch["block"]:
        lo, hi = block * BLOCK, min((block + 1) * BLOCK, n_chunks)
        tokens = np.asarray(stream[lo * raw : hi * raw]).reshape(hi - lo, raw)
        rng = np.random.default_rng([cfg.seed, block])
        mask = random_spans_noise_mask(raw, cfg.noise_density, rng, cfg.mean_noise_span_length, batch=hi - lo)
        x, y = span_corrupt_batch(tokens, mask, sentinels, EOS_ID)
        x, y = _pad_row(x, cfg.input_length), _pad_row(y, cfg.target_length)
        if salient is not None:  # drawn after the random masks: the other rows stay as they were
            chosen = rng.random(hi - lo) < cfg.salient_fraction
            flags = np.asarray(salient[lo * raw : hi * raw]).reshape(hi - lo, raw).astype(bool)
            smask, keep = salient_noise_mask(
                flags & chosen[:, None], cfg.input_length, cfg.target_length, len(sentinels)
            )
            used = smask.any(axis=1)
            x[used], y[used] = salient_corrupt(
                tokens[used],
                smask[used],
                keep[used],
                sentinels,
                EOS_ID,
                PAD_ID,
                cfg.input_length,
                cfg.target_length,
            )
            extra["_salient"].append(used)
            extra["_salient_tokens"].append(smask.sum(axis=1))
            kept_text = np.count_nonzero(tokens != PAD_ID, axis=1)  # document packing pads the rows
            extra["_tail_dropped"].append(np.where(used, np.maximum(kept_text - keep, 0), 0))
        if cfg.packing == "document":  # a row's padding, masked or not, leaves inputs and targets
            x, y = drop_pad(x), drop_pad(y)
        inputs.append(x)
        labels.append(y)
    out = {"input_ids": np.concatenate(inputs), "labels": np.concatenate(labels)}
    if salient is not None:
        out.update({k: np.concatenate(v) for k, v in extra.items()})
    return out


def tokenize_pretrain(
    docs: datasets.Dataset, tok: Tokenizer, cfg: TokenizeConfig, work_dir: Path
) -> tuple[datasets.Dataset, dict]:
    """Encode ``docs["text"]`` into one eos-separated stream and span-corrupt fixed-length chunks.

    Returns the Dataset (``input_ids`` [input_length], ``labels`` [target_length], int32) and stats.
    ``work_dir`` holds the intermediate stream; the caller removes it.
    """
    check_salient(docs, cfg, "the pretraining corpus")
    t0 = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(tok.to_str(), cfg_key(cfg, cfg.salient_fraction == 0))
    # only salient masking needs the character offsets (the offset-returning encode is slower)
    columns = ["text", "salient_spans"] if cfg.salient_fraction > 0 else ["text"]
    features = {"ids": datasets.Sequence(datasets.Value("int32"))}
    if cfg.salient_fraction > 0:
        features["salient"] = datasets.Sequence(datasets.Value("int8"))
    encoded = docs.select_columns(columns).map(
        encode_salient if cfg.salient_fraction > 0 else _encode_docs,
        batched=True,
        batch_size=cfg.batch_size,
        num_proc=cfg.num_proc if cfg.num_proc > 1 else None,
        remove_columns=columns,
        fn_kwargs={"tok": tok},
        features=datasets.Features(features),
        cache_file_name=str(work_dir / "docs.arrow"),  # never next to prepared/ (another stage's outs)
        load_from_cache_file=False,
        new_fingerprint=fp + "-docs",
        desc="encode pretraining text",
    )
    # the whole corpus as one flat stream; each document already ends with eos
    n_tokens = sum(len(c.flatten()) for c in encoded.data.table.column("ids").chunks)
    raw, _ = cfg.raw_and_target_lengths()
    row = raw if cfg.packing == "document" else None
    stream_path = work_dir / "stream.npy"
    stream_length = write_stream(encoded, "ids", np.int32, stream_path, row)  # document packing: padded
    salient_path = None
    if cfg.salient_fraction > 0:  # one flag per token of the stream
        salient_path = work_dir / "salient.npy"
        write_stream(encoded, "salient", np.int8, salient_path, row)
    del encoded  # its memory map closed: span corruption reads the stream
    t_encode = time.perf_counter() - t0

    n_chunks = stream_length // raw
    if n_chunks == 0:
        raise ValueError(f"pretrain: {n_tokens} tokens is less than one {raw}-token chunk")
    n_blocks = -(-n_chunks // BLOCK)
    out = datasets.Dataset.from_dict({"block": np.arange(n_blocks)}).map(
        _corrupt_blocks,
        batched=True,
        batch_size=max(1, cfg.batch_size // BLOCK),
        num_proc=cfg.num_proc if cfg.num_proc > 1 and n_blocks > 1 else None,
        remove_columns=["block"],
        fn_kwargs={
            "stream_path": str(stream_path),
            "salient_path": str(salient_path) if salient_path else None,
            "cfg_json": cfg.model_dump_json(),
            "sentinels": sentinel_ids(tok)[
                : cfg.num_sentinels
            ],  # <extra_id_k>, wherever the tokenizer has it
        },
        features=datasets.Features(
            {
                "input_ids": datasets.Sequence(datasets.Value("int32"), length=cfg.input_length),
                "labels": datasets.Sequence(datasets.Value("int32"), length=cfg.target_length),
                **(_SALIENT_FEATURES if salient_path else {}),
            }
        ),
        cache_file_name=str(work_dir / "pretrain.arrow"),
        load_from_cache_file=False,
        new_fingerprint=fp + "-pretrain",
        desc="span corruption",
    )
    salient_stats = {}
    if salient_path:
        col = column_sums(out, _SALIENT_FEATURES)
        salient_stats = {
            "salient_rows": col["_salient"] / len(out),  # share of rows masked by salient spans
            "salient_tokens": col["_salient_tokens"],  # salient tokens masked
            "salient_tail_dropped_tokens": col["_tail_dropped"],  # cut to fit input_length
        }
        out = out.remove_columns(list(_SALIENT_FEATURES))
    in_len, tg_len = corrupted_lengths(raw, cfg.noise_density, cfg.mean_noise_span_length)
    input_nonpad = _count_nonpad(out, "input_ids")
    label_nonpad = _count_nonpad(out, "labels")
    n = len(out)
    return out, {
        "documents": len(docs),
        "tokens": n_tokens,
        "examples": n,
        "raw_chunk_length": raw,
        "input_length": cfg.input_length,
        "target_length": cfg.target_length,
        "corrupted_input_length": in_len,
        "corrupted_target_length": tg_len,
        "dropped_tokens": stream_length - n_chunks * raw,  # the tail after the last full chunk
        "packing": cfg.packing,
        "input_efficiency": input_nonpad / (n * cfg.input_length),
        "target_efficiency": label_nonpad / (n * cfg.target_length),
        "packing_efficiency": (input_nonpad + label_nonpad) / (n * (cfg.input_length + cfg.target_length)),
        "truncation_rate": 0.0,  # packing cuts documents across chunks but drops no token but the tail
        **salient_stats,
        "encode_seconds": t_encode,
        "seconds": time.perf_counter() - t0,
    }


_SALIENT_FEATURES = {
    "_salient": datasets.Value("bool"),
    "_salient_tokens": datasets.Value("int32"),
    "_tail_dropped": datasets.Value("int32"),
}


def _count_nonpad(ds: datasets.Dataset, column: str) -> int:
    # padding is the only place pad id 0 occurs (text is encoded with encode_special_tokens)
    col = ds.data.table.column(column)
    return int(sum(np.count_nonzero(c.flatten().to_numpy() != PAD_ID) for c in col.chunks))


# ---------------------------------------------------------------- the stage


def tokenize_prepared(prepared_dir: Path, out_dir: Path, cfg: TokenizeConfig) -> dict:
    """Tokenize every prepared role under ``prepared_dir`` into ``out_dir`` (layout: module docstring).

    ``prepared/pretrain`` is required; ``flan``, ``finetune``, ``mmlu`` and ``bbh`` are processed when
    present. Written atomically (temp dir + rename). Returns the stats dict: ``tokenizer``,
    ``pretrain`` (tokens, examples, packing efficiency, ...), ``flan`` and ``finetune.<task>.<split>``
    (examples, tokens, truncation rates), ``mmlu``/``bbh`` ``<split>.examples``, ``seconds``.
    """
    t0 = time.perf_counter()
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    if not (prepared_dir / "pretrain").is_dir():
        raise FileNotFoundError(f"no prepared pretraining corpus at {prepared_dir / 'pretrain'}")
    check_salient(datasets.load_from_disk(str(prepared_dir / "pretrain")), cfg, prepared_dir / "pretrain")
    with atomic_dir(out_dir) as tmp:
        work = tmp / "_work"
        tok, tok_stats = get_tokenizer(prepared_dir, cfg)
        tok.save(str(tmp / "tokenizer.json"))
        stats: dict = {"tokenizer": tok_stats}

        docs = datasets.load_from_disk(str(prepared_dir / "pretrain"))
        pre, stats["pretrain"] = tokenize_pretrain(docs, tok, cfg, work / "pretrain")
        prepared.save(pre, tmp / "pretrain")
        del docs, pre  # each part's memory maps closed once it is written: their pages leave the RSS

        if (prepared_dir / "flan").is_dir():
            flan = datasets.load_from_disk(str(prepared_dir / "flan"))
            flan_tok, stats["flan"] = tokenize_pairs(flan, tok, cfg, work / "flan.arrow", keep_text=False)
            prepared.save(flan_tok, tmp / "flan")
            del flan, flan_tok

        if (prepared_dir / "finetune").is_dir():
            stats["finetune"] = {}
            for task_dir in sorted(p for p in (prepared_dir / "finetune").iterdir() if p.is_dir()):
                dd = datasets.load_from_disk(str(task_dir))
                splits, task_stats = {}, {}
                for split in sorted(dd):
                    work_file = work / "finetune" / f"{task_dir.name}.{split}.arrow"
                    splits[split], task_stats[split] = tokenize_pairs(dd[split], tok, cfg, work_file, True)
                prepared.save(datasets.DatasetDict(splits), tmp / "finetune" / task_dir.name)
                stats["finetune"][task_dir.name] = task_stats

        for role in ("mmlu", "bbh", "probe"):
            if (prepared_dir / role).is_dir():
                dd = datasets.load_from_disk(str(prepared_dir / role))
                prepared.save(dd, tmp / role)
                stats[role] = {split: {"examples": len(dd[split])} for split in sorted(dd)}
        if not (tmp / "probe").is_dir():  # always there, so that the evaluate stages can depend on it
            (tmp / "probe").mkdir()
            (tmp / "probe" / NO_PROBE).write_text(
                "No knowledge probe: only the embedded pretraining corpus has one (its people).\n"
            )

        shutil.rmtree(work, ignore_errors=True)
        stats["seconds"] = time.perf_counter() - t0
    return stats
