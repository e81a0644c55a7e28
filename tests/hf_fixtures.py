"""Hugging Face T5-style assets built offline: a tokenizer laid out as HF T5's (sentinels at the top
of the vocabulary) and a tiny random Switch checkpoint directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from flanmoe.data.tokenizer import sentinel_token, train_tokenizer


def t5_style_tokenizer(texts: Iterable[str], vocab_size: int = 400, num_sentinels: int = 100) -> Tokenizer:
    """pad/eos/unk at 0/1/2, unigram pieces, then ``<extra_id_{n-1}>`` ... ``<extra_id_0>`` appended
    at the top, as HF T5 tokenizers have them (``<extra_id_0>`` is the last id)."""
    tok = train_tokenizer(texts, vocab_size, kind="unigram", num_sentinels=0)
    tok.add_special_tokens([sentinel_token(i) for i in reversed(range(num_sentinels))])
    return tok


# the shape both tiny checkpoints share
_TINY = dict(
    d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4, decoder_start_token_id=0
)


def _save(model_cls, cfg, path: Path, tokenizer_file: Path | None) -> Path:
    model_cls(cfg).save_pretrained(path)
    if tokenizer_file is not None:
        import transformers

        transformers.T5TokenizerFast(tokenizer_file=str(tokenizer_file)).save_pretrained(path)
    return path


def tiny_hf_switch(path: Path, vocab_size: int, tokenizer_file: Path | None = None, seed: int = 0) -> Path:
    """A tiny random ``SwitchTransformersForConditionalGeneration`` (ReLU experts, one sparse block per
    stack) saved with ``save_pretrained`` to ``path``, with the tokenizer as an HF T5 tokenizer directory."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.SwitchTransformersConfig(
        vocab_size=vocab_size,
        num_experts=4,
        num_sparse_encoder_layers=1,
        num_sparse_decoder_layers=1,
        expert_capacity=64,
        **_TINY,
    )
    return _save(transformers.SwitchTransformersForConditionalGeneration, cfg, path, tokenizer_file)


def tiny_hf_t5(path: Path, vocab_size: int, tokenizer_file: Path | None = None, seed: int = 0) -> Path:
    """A tiny random T5.1.1 ``T5ForConditionalGeneration`` (gated GELU, untied head) saved to ``path``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        vocab_size=vocab_size, feed_forward_proj="gated-gelu", tie_word_embeddings=False, **_TINY
    )
    return _save(transformers.T5ForConditionalGeneration, cfg, path, tokenizer_file)
