"""Benchmark: the tokenize stage's pretraining path vs raw ``tokenizers`` ``encode_batch``.

Builds a ~5 MB corpus offline (Python's own ``pydoc_data`` topics, repeated), trains a byte-level BPE
tokenizer, then times, interleaved and repeated:

- ``encode_batch``: ``tok.encode_batch(docs)`` on the same documents (the reference: Rust, threaded);
- ``encode_batch_fast``: the same without character offsets (what the stage calls), for context;
- ``stage``: ``tokenize_pretrain`` (``datasets.map`` encoding to Arrow, the flat stream, T5 span
  corruption of fixed-length chunks into a second ``datasets.map``);
- ``stage+save``: the same plus ``prepared.save`` (content hash + ``save_to_disk``), as the stage runs.

Tokens/s counts the document stream (eos included) for all rows; the ratio is stage / encode_batch
(target >= 0.7), as the median over rounds of the per-round ratio (each round runs both back to back,
so load from other processes hits both alike) and as best time / best time; ``vs fast`` is the same
median against encode_batch_fast. Run ``python -m bench.tokenize [--mb 5] [--repeats 3] [--json PATH]``.
"""

from __future__ import annotations

import os
import sys

# `python bench/tokenize.py` would put bench/ first on sys.path, and this file would shadow the
# standard library's `tokenize` module: drop that entry before anything imports it
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402


def build_corpus(mb: float) -> list[str]:
    """Documents totalling about ``mb`` MB: the pydoc topics, repeated with a copy number."""
    from pydoc_data.topics import topics

    base = [text for _, text in sorted(topics.items())]
    docs: list[str] = []
    size, copy = 0, 0
    while size < mb * 1_000_000:
        for text in base:
            doc = f"[copy {copy}] {text}"  # a small difference per copy, as real documents differ
            docs.append(doc)
            size += len(doc)
        copy += 1
    return docs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=5.0, help="corpus size in MB")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (interleaved)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--num-proc", type=int, default=1, help="TokenizeConfig.num_proc")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from flanmoe.data import prepared
    from flanmoe.data.tokenize import TokenizeConfig, tokenize_pretrain
    from flanmoe.data.tokenizer import train_tokenizer

    datasets.disable_progress_bars()
    docs = build_corpus(args.mb)
    mb = sum(len(d) for d in docs) / 1e6
    t0 = time.perf_counter()
    tok = train_tokenizer(docs, args.vocab_size, "bpe", 100)
    train_s = time.perf_counter() - t0
    tok.encode_special_tokens = True  # as the stage encodes
    cfg = TokenizeConfig(vocab_size=args.vocab_size, num_proc=args.num_proc)

    tmp = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        n = len(docs)
        ds_path = tmp / "pretrain"
        datasets.Dataset.from_dict({"text": docs, "timestamp": [""] * n, "url": [""] * n}).save_to_disk(
            str(ds_path)
        )
        on_disk = datasets.load_from_disk(str(ds_path))

        names = ["encode_batch", "encode_batch_fast", "stage", "stage+save"]
        times: dict[str, list[float]] = {name: [] for name in names}
        tokens = 0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            encs = tok.encode_batch(docs)
            times["encode_batch"].append(time.perf_counter() - t0)
            tokens = sum(len(e) for e in encs)
            del encs
            t0 = time.perf_counter()
            tok.encode_batch_fast(docs)
            times["encode_batch_fast"].append(time.perf_counter() - t0)

            work = tmp / f"work{r}"
            t0 = time.perf_counter()
            out, stats = tokenize_pretrain(on_disk, tok, cfg, work)
            times["stage"].append(time.perf_counter() - t0)
            prepared.save(out, tmp / f"out{r}")
            times["stage+save"].append(time.perf_counter() - t0)
            assert stats["tokens"] == tokens, (stats["tokens"], tokens)
            del out
            shutil.rmtree(work)
            shutil.rmtree(tmp / f"out{r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = {}
    for name, ts in times.items():
        rows[name] = {
            "median_s": statistics.median(ts),
            "best_s": min(ts),
            "tokens_per_s_median": tokens / statistics.median(ts),
            "tokens_per_s_best": tokens / min(ts),
        }
    for name in ("stage", "stage+save"):
        per_round = [a / b for a, b in zip(times["encode_batch"], times[name], strict=True)]
        per_round_fast = [a / b for a, b in zip(times["encode_batch_fast"], times[name], strict=True)]
        rows[name]["ratio_median"] = statistics.median(per_round)
        rows[name]["ratio_best"] = rows["encode_batch"]["best_s"] / rows[name]["best_s"]
        rows[name]["ratio_vs_fast_median"] = statistics.median(per_round_fast)
    result = {
        "corpus_mb": mb,
        "documents": len(docs),
        "tokens": tokens,
        "vocab_size": tok.get_vocab_size(),
        "tokenizer_train_s": train_s,
        "repeats": args.repeats,
        "num_proc": args.num_proc,
        "cpus": os.cpu_count(),
        "packing_efficiency": stats["packing_efficiency"],
        "examples": stats["examples"],
        "target_ratio": 0.7,
        "rows": rows,
    }

    print(
        f"corpus {mb:.1f} MB, {len(docs)} docs, {tokens:,} tokens, vocab {tok.get_vocab_size()}, "
        f"{args.repeats} rounds, num_proc {args.num_proc}, {os.cpu_count()} cpus"
    )
    print(
        f"{'path':<19}{'median s':>10}{'best s':>9}{'Mtok/s med':>12}{'Mtok/s best':>13}"
        f"{'ratio med':>11}{'ratio best':>12}{'vs fast med':>13}"
    )
    for name, row in rows.items():
        ratio = (
            f"{row['ratio_median']:>11.2f}{row['ratio_best']:>12.2f}{row['ratio_vs_fast_median']:>13.2f}"
            if "ratio_median" in row
            else f"{'-':>11}{'-':>12}{'-':>13}"
        )
        print(
            f"{name:<19}{row['median_s']:>10.3f}{row['best_s']:>9.3f}"
            f"{row['tokens_per_s_median'] / 1e6:>12.2f}{row['tokens_per_s_best'] / 1e6:>13.2f}{ratio}"
        )
    print(
        f"packing efficiency {stats['packing_efficiency']:.4f} over {stats['examples']:,} examples; "
        f"target ratio >= 0.7"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
