"""Stage `tokenize`: data/prepared -> data/tokenized (tokenizer.json + token-id datasets).

Trains the tokenizer on the pretraining corpus (or loads `tokenize.tokenizer_path`: a tokenizer.json or a
directory holding one, e.g. a Hugging Face T5 tokenizer's, sentinels anywhere in it), span-corrupts
and packs the corpus, tokenizes instruction and fine-tuning pairs, keeps the evaluation sets as they
are. Stats go to metrics/tokenize.json and MLflow; tokenizer.json is logged as an artifact.
"""

from __future__ import annotations

from flanmoe.atomic import write_json
from flanmoe.config import flatten
from stages.common import disk_mb, fail, load_params, run_stage, tracked_run, without_timings
from stages.paths import METRICS, PREPARED, TOKENIZED

OUT = TOKENIZED


def main() -> None:
    params = load_params()
    cfg = params.tokenize
    if not (PREPARED / "pretrain").is_dir():
        fail(f"{PREPARED / 'pretrain'} not found: run the prepare stage first (dvc repro prepare)")
    import datasets

    from flanmoe.data.salient import check_salient
    from flanmoe.data.tokenize import tokenize_prepared
    from flanmoe.data.tokenizer import load_tokenizer

    try:  # salient masking needs the salient spans of an embedded corpus
        check_salient(datasets.load_from_disk(str(PREPARED / "pretrain")), cfg, PREPARED / "pretrain")
    except ValueError as e:
        fail(str(e))

    if cfg.tokenizer_path is not None:  # a given tokenizer must exist and carry our special tokens
        try:
            load_tokenizer(cfg.tokenizer_path, cfg.num_sentinels)
        except (OSError, ValueError) as e:
            fail(f"tokenize.tokenizer_path ({cfg.tokenizer_path}): {e}")
    stats = tokenize_prepared(PREPARED, OUT, cfg)
    metrics = {
        k: v for k, v in flatten(stats).items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    # throughput: to MLflow and the log only (metrics/tokenize.json holds no timings)
    read_mb, tokens = disk_mb(PREPARED), total_tokens(stats)
    metrics |= {"mb_per_s": read_mb / stats["seconds"], "tokens_per_s": tokens / stats["seconds"]}
    write_json(METRICS / "tokenize.json", without_timings(stats))
    with tracked_run(
        "tokenize",
        params,
        ["base", "tokenize"],
        inputs={PREPARED: "source"},
        outputs=[METRICS / "tokenize.json"],
    ) as run:
        run.log_metrics(metrics)
        run.log_artifact(OUT / "tokenizer.json")
    pre = stats.get("pretrain", {})
    print(
        f"tokenize: wrote {OUT} (pretrain packing efficiency "
        f"{pre.get('packing_efficiency', float('nan')):.3f}, {stats.get('seconds', 0):.1f} s)"
    )
    print(
        f"tokenize: {read_mb:.1f} MB prepared, {tokens:,} tokens in {stats['seconds']:.1f} s "
        f"({metrics['mb_per_s']:.2f} MB/s, {metrics['tokens_per_s']:,.0f} tokens/s)"
    )


def total_tokens(stats: dict) -> int:
    """Tokens written: the pretraining stream, the instruction pairs and every fine-tuning split."""
    splits = [s for task in stats.get("finetune", {}).values() for s in task.values()]
    return sum(part.get("tokens", 0) for part in [stats["pretrain"], stats.get("flan", {}), *splits])


if __name__ == "__main__":
    run_stage(main)
